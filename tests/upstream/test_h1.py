"""HTTP/1.1 upstream pool: forwarding, keep-alive, pool cap, stale retry, streaming, failures."""

from __future__ import annotations

import contextlib
import functools
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from config.schema import UpstreamTls
from proxy.http.errors import UpstreamProtocolError, UpstreamReset
from proxy.http.model import BytesBody, EmptyBody
from tests.upstream.helpers import (
    ChannelBody,
    CountingBody,
    cluster,
    counter,
    read_body,
    request,
    running,
    upstream,
)
from tests.upstream.servers import H1Exchange, h1_server


async def test_get_and_post_through_the_pool() -> None:
    async with h1_server() as server, running(cluster(server.port)) as (manager, stats):
        backend = upstream(manager)
        req = request(b"GET", b"/hello?x=1")
        response = await backend.send(req)
        assert response.status == 200
        assert await read_body(response) == b"GET /hello?x=1 "
        assert req.info.upstream_cluster == "backend"
        assert req.info.upstream_host == f"127.0.0.1:{server.port}"

        response = await backend.send(request(b"POST", b"/submit", b"payload"))
        assert await read_body(response) == b"POST /submit payload"
        assert counter(stats, "rq_total") == 2
        assert counter(stats, "rq_2xx") == 2
        assert stats.gauge("cluster.backend.upstream_rq_active").value == 0


async def test_host_header_is_set_once() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def handler(ex: H1Exchange) -> None:
        seen.append([(bytes(k), bytes(v)) for k, v in ex.request.headers])
        await ex.respond(204)

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, _):
        backend = upstream(manager)
        await read_body(await backend.send(request(authority=b"svc.local")))
        headers = [(b"host", b"a.test"), (b"host", b"b.test"), (b"x-a", b"1")]
        await read_body(await backend.send(request(headers=headers)))
    assert [v for k, v in seen[0] if k == b"host"] == [b"svc.local"]
    assert [v for k, v in seen[1] if k == b"host"] == [b"a.test"]


async def test_sequential_requests_reuse_one_connection() -> None:
    async with h1_server() as server, running(cluster(server.port)) as (manager, stats):
        backend = upstream(manager)
        for i in range(5):
            response = await backend.send(request(target=b"/%d" % i))
            await read_body(response)
        assert server.connections == 1
        assert counter(stats, "cx_total") == 1
        assert stats.gauge("cluster.backend.upstream_cx_active").value == 1


async def test_pool_cap_makes_requests_wait_in_fifo_order() -> None:
    gate = trio.Event()

    async def handler(ex: H1Exchange) -> None:
        if ex.target == b"/first":
            await gate.wait()
        await ex.respond(200, ex.target)

    results: list[bytes] = []
    async with (
        h1_server(handler) as server,
        running(cluster(server.port, max_connections=1)) as (manager, _),
    ):
        backend = upstream(manager)

        async def call(target: bytes) -> None:
            results.append(await read_body(await backend.send(request(target=target))))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, b"/first")
            await server.wait_for(lambda: server.requests == 1)
            for target in (b"/second", b"/third", b"/fourth"):
                nursery.start_soon(call, target)
                await trio.testing.wait_all_tasks_blocked()
            assert server.requests == 1
            gate.set()
        assert server.targets == [b"/first", b"/second", b"/third", b"/fourth"]
        assert server.connections == 1


async def test_connection_refused_is_a_connect_failure() -> None:
    from proxy.http.errors import UpstreamConnectFailure

    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with running(cluster(port)) as (manager, stats):
        with pytest.raises(UpstreamConnectFailure):
            await upstream(manager).send(request())
        assert counter(stats, "cx_connect_fail") == 1
        assert manager.snapshot()[0]["hosts"] == [
            {
                "address": f"127.0.0.1:{port}",
                "cx_active": 0,
                "rq_active": 0,
                "rq_total": 1,
                "rq_error": 1,
                "healthy": False,
            }
        ]


async def test_server_closing_mid_body_fails_the_read() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.start(200, [(b"content-length", b"100000")])
        await ex.send(b"partial")
        await ex.abort()

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, _):
        response = await upstream(manager).send(request())
        assert response.status == 200
        with pytest.raises(UpstreamReset):
            await read_body(response)
        assert manager.snapshot()[0]["hosts"][0]["cx_active"] == 0  # type: ignore[index]


async def test_server_closing_before_the_head_is_a_reset() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.abort()

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, stats):
        with pytest.raises(UpstreamReset):
            await upstream(manager).send(request())
        assert counter(stats, "rq_rx_reset") == 1


async def test_malformed_response_is_a_protocol_error() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.stream.send_all(b"HTTP/1.1 abc nonsense\r\n\r\n")
        ex.aborted = True

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, _):
        with pytest.raises(UpstreamProtocolError):
            await upstream(manager).send(request())


async def test_101_switching_protocols_is_a_protocol_error() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n")
        ex.aborted = True

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, _):
        with pytest.raises(UpstreamProtocolError):
            await upstream(manager).send(request())


async def test_100_continue_is_skipped() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        await ex.respond(200, await ex.body())

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, _):
        response = await upstream(manager).send(request(b"POST", body=b"abc"))
        assert (response.status, await read_body(response)) == (200, b"abc")


async def test_stale_keep_alive_connection_is_retried_transparently() -> None:
    served: set[int] = set()

    async def handler(ex: H1Exchange) -> None:
        if ex.conn_id in served:
            # The close crossed the request on the wire: the server hangs up without answering.
            await ex.abort()
            return
        served.add(ex.conn_id)
        await ex.respond(200, b"ok %d" % ex.conn_id)

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, stats):
        backend = upstream(manager)
        assert await read_body(await backend.send(request())) == b"ok 1"
        response = await backend.send(request(b"POST", body=b"replayable"))
        assert await read_body(response) == b"ok 2"
        assert server.connections == 2
        assert counter(stats, "rq_rx_reset") == 0
        assert counter(stats, "rq_retry") == 1


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.respond(200, b"ok %d" % ex.conn_id)
        ex.close_after = True  # the server drops the idle connection without saying so

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, stats):
        backend = upstream(manager)
        assert await read_body(await backend.send(request())) == b"ok 1"
        await server.wait_for(lambda: server.closed == 1)
        # The EOF is seen when the connection leaves the pool: no request is sent on it.
        response = await backend.send(request(b"POST", body=b"replayable"))
        assert await read_body(response) == b"ok 2"
        assert server.connections == 2
        assert server.requests == 2
        assert counter(stats, "rq_retry") == 0


async def test_consumer_closing_the_body_early_discards_the_connection() -> None:
    async def handler(ex: H1Exchange) -> None:
        await ex.start(200, [(b"content-length", b"%d" % (4 << 20))])
        try:
            for _ in range(64):
                await ex.send(b"y" * 65536)
            await ex.end()
        except trio.BrokenResourceError:
            ex.aborted = True

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, stats):
        backend = upstream(manager)
        response = await backend.send(request())
        assert response.body.length == 4 << 20
        assert await response.body.read()
        await response.body.aclose()
        await response.body.aclose()
        assert stats.gauge("cluster.backend.upstream_cx_active").value == 0
        assert stats.gauge("cluster.backend.upstream_rq_active").value == 0
        response = await backend.send(request())
        await response.body.aclose()
        assert server.connections == 2


async def test_cancelled_send_leaves_the_pool_consistent() -> None:
    gate = trio.Event()

    async def handler(ex: H1Exchange) -> None:
        if ex.target == b"/slow":
            await gate.wait()
        await ex.respond(200, b"done")

    async with (
        h1_server(handler) as server,
        running(cluster(server.port, max_connections=1)) as (manager, stats),
    ):
        backend = upstream(manager)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.send, request(target=b"/slow"))
            await server.wait_for(lambda: server.requests == 1)
            nursery.cancel_scope.cancel()
        assert stats.gauge("cluster.backend.upstream_rq_active").value == 0
        assert stats.gauge("cluster.backend.upstream_cx_active").value == 0
        gate.set()
        assert await read_body(await backend.send(request())) == b"done"
        assert server.connections == 2


async def test_request_and_response_trailers_use_chunked_framing() -> None:
    async def handler(ex: H1Exchange) -> None:
        body = await ex.body()
        await ex.start(200, [(b"transfer-encoding", b"chunked"), (b"trailer", b"x-sum")])
        await ex.send(body)
        await ex.end([(b"x-sum", b"%d" % len(body)), *ex.trailers])

    async with h1_server(handler) as server, running(cluster(server.port)) as (manager, _):
        backend = upstream(manager)
        body = BytesBody(b"abc", trailers=[(b"x-req", b"1")])
        response = await backend.send(request(b"POST", body=body))
        assert await read_body(response) == b"abc"
        assert response.body.trailers == [(b"x-sum", b"3"), (b"x-req", b"1")]
        assert (b"transfer-encoding", b"chunked") not in response.headers

        streamed = ChannelBody(trailers=[(b"x-req", b"2")])
        async with trio.open_nursery() as nursery:

            async def feed() -> None:
                async with streamed.send:
                    await streamed.send.send(b"hello ")
                    await streamed.send.send(b"world")

            nursery.start_soon(feed)
            response = await backend.send(request(b"POST", body=streamed))
            assert await read_body(response) == b"hello world"
        assert response.body.trailers == [(b"x-sum", b"11"), (b"x-req", b"2")]
        response = await backend.send(request(b"POST", body=EmptyBody([(b"x-req", b"3")])))
        assert await read_body(response) == b""
        assert response.body.trailers == [(b"x-sum", b"0"), (b"x-req", b"3")]
        assert server.connections == 1


async def test_large_bodies_stream_both_ways_with_bounded_buffering() -> None:
    total = 20 << 20

    async def echo(ex: H1Exchange) -> None:
        await ex.start(200, [(b"transfer-encoding", b"chunked")])
        while (chunk := await ex.chunk()) is not None:
            await ex.send(chunk)
        await ex.end()

    async with h1_server(echo) as server, running(cluster(server.port)) as (manager, _):
        body = CountingBody(total)
        response = await upstream(manager).send(request(b"POST", body=body))
        received = 0
        ahead = 0
        while chunk := await response.body.read():
            received += len(chunk)
            ahead = max(ahead, body.pulled - received)
        assert received == total
        # The upload is pulled only as the echo drains: never more than socket buffers ahead.
        assert ahead < 8 << 20
        assert server.connections == 1
        response = await upstream(manager).send(request())
        await read_body(response)
        assert server.connections == 1  # the full-duplex exchange left a reusable connection


class Corked(trio.abc.Stream):
    """A TCP stream whose writes can be held back and then leave together in one write."""

    def __init__(self, tcp: trio.SocketStream) -> None:
        self.tcp = tcp
        self.held: bytearray | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.held is None:
            await self.tcp.send_all(data)
        else:
            self.held += data

    async def uncork(self) -> None:
        held, self.held = self.held, None
        await self.tcp.send_all(held or b"")

    async def wait_send_all_might_not_block(self) -> None:
        await self.tcp.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.tcp.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.tcp.aclose()


async def test_tls_records_after_the_response_are_never_a_later_response(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    opened: list[int] = []

    async def serve(tcp: trio.SocketStream) -> None:
        opened.append(1)
        corked = Corked(tcp)
        stream = trio.SSLStream(corked, server_ctx, server_side=True)
        buf = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while True:
                while b"\r\n\r\n" not in buf:
                    if not (data := await stream.receive_some(65536)):
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                corked.held = bytearray()
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                if head.split(b" ")[1] == b"/extra":
                    # A TLS record of its own, in the same TCP write: the client's TLS layer
                    # holds it, still encrypted, after decrypting the response's record.
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nPOISONED")
                await corked.uncork()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"), serve, 0
        )
        port = listeners[0].socket.getsockname()[1]
        tls = UpstreamTls(ca_file=ca_file, sni="localhost")
        async with running(cluster(port, tls=tls)) as (manager, _):
            backend = upstream(manager)
            assert await read_body(await backend.send(request(target=b"/extra"))) == b"ok"
            for _ in range(3):
                assert await read_body(await backend.send(request(target=b"/next"))) == b"ok"
            assert len(opened) == 2
        nursery.cancel_scope.cancel()
