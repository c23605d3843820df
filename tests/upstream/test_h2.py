"""HTTP/2 upstream: multiplexing, trailers, bidirectional streaming, resets, GOAWAY, TLS + ALPN."""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme

from config.schema import UpstreamTls
from proxy.http.errors import UpstreamConnectFailure, UpstreamRemoteReset, UpstreamReset
from proxy.http.model import BytesBody, Response
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
from tests.upstream.servers import H2Exchange, h2_server


async def test_concurrent_requests_share_one_connection() -> None:
    all_open = trio.Event()

    async def handler(ex: H2Exchange) -> None:
        body = await ex.body()
        if ex.conn.active == 10:
            all_open.set()
        await all_open.wait()
        await ex.respond(200, (ex.header(b":path") or b"") + body, [(b"x-a", b"1")])

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, stats),
    ):
        backend = upstream(manager)
        results: dict[int, bytes] = {}

        async def call(i: int) -> None:
            response = await backend.send(request(b"POST", b"/%d" % i, b"-body"))
            assert response.status == 200
            assert (b"x-a", b"1") in response.headers
            results[i] = await read_body(response)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(call, i)
        assert results == {i: b"/%d-body" % i for i in range(10)}
        assert server.connections == 1
        assert server.max_active == 10
        assert counter(stats, "rq_2xx") == 10
        assert stats.gauge("cluster.backend.upstream_rq_active").value == 0


async def test_authority_scheme_and_connection_headers() -> None:
    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        await ex.respond(200, repr(ex.headers).encode())

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        headers = [(b"host", b"h.test"), (b"te", b"trailers"), (b"x-k", b"v")]
        req = request(headers=headers, authority=b"")
        seen = await read_body(await upstream(manager).send(req))
    assert (
        seen
        == repr(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"h.test"),
                (b":path", b"/"),
                (b"te", b"trailers"),
                (b"x-k", b"v"),
            ]
        ).encode()
    )


async def test_mixed_case_fields_go_lowercase_and_connection_fields_stay_behind() -> None:
    # h2 no longer normalises outbound headers (proxy/h2tuning.py): request_headers must.
    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        await ex.respond(200, repr(ex.headers).encode())

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        headers = [
            (b"Host", b"h.test"),
            (b"X-Added-By-Filter", b"v"),
            (b"Connection", b"close"),
            (b"Keep-Alive", b"5"),
            (b"TE", b"gzip"),
        ]
        req = request(headers=headers, authority=b"")
        seen = await read_body(await upstream(manager).send(req))
    assert b"(b'x-added-by-filter', b'v')" in seen
    assert b"(b':authority', b'h.test')" in seen
    for gone in (b"onnection", b"eep-alive", b"'te'", b"'TE'", b"Host", b"X-Added"):
        assert gone not in seen


async def test_stream_limit_opens_a_second_connection() -> None:
    gate = trio.Event()

    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        await gate.wait()
        await ex.respond(200, b"ok")

    async with h2_server(handler) as server:
        config = cluster(server.port, protocol="h2c", max_concurrent_streams=2)
        async with running(config) as (manager, _):

            async def call() -> None:
                assert await read_body(await upstream(manager).send(request())) == b"ok"

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(call)
                await server.wait_for(lambda: len(server.streams) == 3)
                assert server.connections == 2
                gate.set()


async def test_request_and_response_trailers() -> None:
    async def handler(ex: H2Exchange) -> None:
        body = await ex.body()
        await ex.start(200, [(b"content-type", b"application/grpc")])
        await ex.send(body)
        await ex.end([(b"grpc-status", b"0"), *ex.trailers])

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        backend = upstream(manager)
        response = await backend.send(
            request(b"POST", body=BytesBody(b"msg", trailers=[(b"x-req", b"1")]))
        )
        assert await read_body(response) == b"msg"
        assert response.body.trailers == [(b"grpc-status", b"0"), (b"x-req", b"1")]


async def test_bidirectional_streaming_interleaves() -> None:
    async def echo(ex: H2Exchange) -> None:
        await ex.start(200)
        while (chunk := await ex.chunk()) is not None:
            await ex.send(b"echo:" + chunk)
        await ex.end([(b"grpc-status", b"0"), *ex.trailers])

    async with (
        h2_server(echo) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        body = ChannelBody(trailers=[(b"x-last", b"yes")])
        got_response, response_channel = trio.open_memory_channel[Response](1)
        log: list[str] = []
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await got_response.send(await upstream(manager).send(request(b"POST", body=body)))

            nursery.start_soon(send)
            await body.send.send(b"one")
            log.append("sent one")
            with trio.fail_after(10):
                response = await response_channel.receive()
            assert response.status == 200
            for word in (b"two", b"three"):
                log.append((await response.body.read()).decode())
                await body.send.send(word)
                log.append("sent " + word.decode())
            log.append((await response.body.read()).decode())
            await body.send.aclose()
            assert await response.body.read() == b""
        assert log == ["sent one", "echo:one", "sent two", "echo:two", "sent three", "echo:three"]
        assert response.body.trailers == [(b"grpc-status", b"0"), (b"x-last", b"yes")]


async def test_large_transfer_respects_flow_control() -> None:
    total = 20 << 20

    async def echo(ex: H2Exchange) -> None:
        await ex.start(200)
        while (chunk := await ex.chunk()) is not None:
            await ex.send(chunk)
        await ex.end()

    async with (
        h2_server(echo) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        body = CountingBody(total)
        response = await upstream(manager).send(request(b"POST", body=body))
        received = ahead = 0
        while chunk := await response.body.read():
            received += len(chunk)
            ahead = max(ahead, body.pulled - received)
        assert received == total
        assert ahead < 8 << 20


async def test_rst_stream_is_a_remote_reset() -> None:
    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        if ex.header(b":path") == b"/late":
            await ex.start(200)
            await ex.send(b"part")
        await ex.reset(2)

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, stats),
    ):
        backend = upstream(manager)
        with pytest.raises(UpstreamRemoteReset):
            await backend.send(request())
        response = await backend.send(request(target=b"/late"))
        with pytest.raises(UpstreamReset):
            await read_body(response)
        assert counter(stats, "rq_rx_reset") == 1
        assert stats.gauge("cluster.backend.upstream_rq_active").value == 0
        assert server.connections == 1  # a stream reset leaves the connection usable


async def test_consumer_closing_early_resets_the_stream() -> None:
    async def handler(ex: H2Exchange) -> None:
        await ex.start(200)
        for _ in range(100):
            await ex.send(b"z" * 16384)

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        response = await upstream(manager).send(request())
        assert await response.body.read()
        await response.body.aclose()
        await server.wait_for(lambda: server.resets == [1])
        response = await upstream(manager).send(request())
        await response.body.aclose()
        assert server.connections == 1


async def test_cancelled_send_resets_only_its_stream() -> None:
    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        if ex.header(b":path") == b"/slow":
            await trio.sleep_forever()
        await ex.respond(200, b"fast")

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, stats),
    ):
        backend = upstream(manager)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.send, request(target=b"/slow"))
            await server.wait_for(lambda: len(server.streams) == 1)
            nursery.cancel_scope.cancel()
        await server.wait_for(lambda: server.resets == [1])
        assert stats.gauge("cluster.backend.upstream_rq_active").value == 0
        assert await read_body(await backend.send(request())) == b"fast"
        assert server.connections == 1


async def test_idle_h2_connection_is_closed() -> None:
    async with (
        h2_server() as server,
        running(cluster(server.port, protocol="h2c", idle_timeout=0.05)) as (manager, _),
    ):
        assert await read_body(await upstream(manager).send(request())) == b"/ "
        await server.wait_for(lambda: server.closed == 1)
        assert manager.snapshot()[0]["hosts"][0]["cx_active"] == 0  # type: ignore[index]


async def test_goaway_retries_unprocessed_streams_on_a_new_connection() -> None:
    both = trio.Event()

    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        if ex.conn.conn_id == 1:
            if ex.conn.active == 2:
                both.set()
            await both.wait()
            if ex.stream_id == 1:
                await ex.conn.goaway(last_stream_id=1)
                await ex.respond(200, b"first on 1")
            return
        await ex.respond(200, b"%s on %d" % (ex.header(b":path"), ex.conn.conn_id))

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, stats),
    ):
        backend = upstream(manager)
        results: dict[bytes, bytes] = {}

        async def call(target: bytes) -> None:
            results[target] = await read_body(await backend.send(request(target=target)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, b"/a")
            await server.wait_for(lambda: len(server.streams) == 1)
            nursery.start_soon(call, b"/b")
        assert results == {b"/a": b"first on 1", b"/b": b"/b on 2"}
        assert server.connections == 2
        assert counter(stats, "rq_rx_reset") == 0


async def test_connection_loss_fails_every_stream() -> None:
    async def handler(ex: H2Exchange) -> None:
        await ex.body()
        if ex.conn.active == 3:
            await ex.conn.stream.aclose()
        await trio.sleep_forever()

    async with (
        h2_server(handler) as server,
        running(cluster(server.port, protocol="h2c")) as (manager, _),
    ):
        failures: list[BaseException] = []

        async def call() -> None:
            try:
                await upstream(manager).send(request(b"POST", body=b"not-replayed"))
            except UpstreamReset as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        assert len(failures) == 3
        assert manager.snapshot()[0]["hosts"][0]["cx_active"] == 0  # type: ignore[index]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_h2_over_tls_with_alpn(ca: trustme.CA, tmp_path: object) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2"])
    ca_file = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    async with h2_server(ssl_context=server_ctx) as server:
        config = cluster(
            server.port, protocol="h2", tls=UpstreamTls(ca_file=ca_file, sni="localhost")
        )
        async with running(config) as (manager, _):
            response = await upstream(manager).send(request(b"POST", b"/tls", b"!"))
            assert await read_body(response) == b"/tls !"
            assert server.connections == 1


async def test_tls_failure_is_a_connect_failure(ca: trustme.CA, tmp_path: object) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.test").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2"])
    ca_file = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    async with h2_server(ssl_context=server_ctx) as server:
        config = cluster(
            server.port, protocol="h2", tls=UpstreamTls(ca_file=ca_file, sni="localhost")
        )
        async with running(config) as (manager, stats):
            with pytest.raises(UpstreamConnectFailure):
                await upstream(manager).send(request())
            assert counter(stats, "cx_connect_fail") == 1
