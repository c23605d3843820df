"""Faults injected for real: dead and resetting upstreams, malformed and slow clients, drain."""

from __future__ import annotations

import json
from pathlib import Path

import h11
import pytest
import trio

from config import schema
from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import (
    H1Client,
    H2Client,
    backend,
    meshwire,
    one_route_config,
    raw_backend,
)

DEADLINE = 20  # generous bound on waits; tests never assert elapsed time


async def ok(request: Request) -> Response:
    await request.body.aclose()
    return Response(200, [(b"content-length", b"2")], BytesBody(b"ok"))


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


async def reset_mid_body(stream: trio.SocketStream) -> None:
    await read_head(stream)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    data = b""
    with trio.fail_after(DEADLINE):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return data
            if not chunk:
                return data
            data += chunk


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dead_upstream_is_503_with_flag_uf() -> None:
    async with meshwire(one_route_config(0, free_port())) as mw:
        async with H1Client.connect(mw.port()) as client:
            reply = await client.request("GET", "/")
            again = await client.request("GET", "/")
        exposition = mw.app.telemetry.prometheus_text()
    assert reply.status == 503
    assert reply.header(b"x-meshwire-response-flags") == b"UF"
    assert json.loads(reply.body)["error"] == "upstream_connect_failure"
    assert again.status == 503  # the same connection keeps serving
    assert 'meshwire_response_flags_total{meshwire_response_flags="UF"' in exposition


async def test_upstream_reset_mid_body_truncates_and_the_listener_serves_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    async with raw_backend(reset_mid_body) as bad, backend(ok) as good:
        async with meshwire(one_route_config(0, bad, access_log=str(log))) as mw:
            async with H1Client.connect(mw.port()) as client:
                with pytest.raises(h11.RemoteProtocolError):
                    await client.request("GET", "/big")
            async with H2Client.connect(mw.port()) as h2client:
                with pytest.raises(ConnectionResetError):
                    await h2client.request("GET", "/big")
        async with meshwire(one_route_config(0, good)) as mw:
            async with H1Client.connect(mw.port()) as client:
                assert (await client.request("GET", "/")).status == 200
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 2
    assert all("UC" in e["response_flags"] for e in entries), entries


async def test_malformed_request_gets_400_and_the_listener_keeps_serving() -> None:
    async with backend(ok) as port, meshwire(one_route_config(0, port)) as mw:
        stream = await trio.open_tcp_stream("127.0.0.1", mw.port())
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n")
            answer = await read_until_eof(stream)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"connection: close" in answer.lower()
        async with H1Client.connect(mw.port()) as client:
            assert (await client.request("GET", "/")).status == 200


async def test_slowloris_head_times_out_with_408() -> None:
    limits = schema.Limits(header_read_timeout=schema.Duration(0.3))
    async with backend(ok) as port, meshwire(one_route_config(0, port, limits=limits)) as mw:
        stream = await trio.open_tcp_stream("127.0.0.1", mw.port())
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
            answer = await read_until_eof(stream)
        assert answer.startswith(b"HTTP/1.1 408 ")
        async with H1Client.connect(mw.port()) as client:
            assert (await client.request("GET", "/")).status == 200


async def test_graceful_drain_finishes_in_flight_requests() -> None:
    arrived = trio.Semaphore(0)
    release = trio.Event()

    async def slow(request: Request) -> Response:
        await request.body.aclose()
        arrived.release()
        await release.wait()
        return Response(200, [(b"content-length", b"4")], BytesBody(b"done"))

    replies: dict[str, int] = {}
    async with backend(slow) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port()) as h1, H2Client.connect(mw.port()) as h2c:

            async def via_h1() -> None:
                reply = await h1.request("GET", "/h1")
                replies["h1"] = reply.status
                replies["h1_close"] = int(reply.header(b"connection") == b"close")

            async def via_h2() -> None:
                replies["h2"] = (await h2c.request("GET", "/h2")).status

            async with trio.open_nursery() as nursery:
                nursery.start_soon(via_h1)
                nursery.start_soon(via_h2)
                with trio.fail_after(DEADLINE):
                    await arrived.acquire()
                    await arrived.acquire()
                mw.shutdown.set()
                with trio.fail_after(DEADLINE):
                    while True:  # the listener stops accepting once the drain begins
                        try:
                            probe = await trio.open_tcp_stream("127.0.0.1", mw.port())
                        except OSError:
                            break
                        await probe.aclose()
                        await trio.sleep(0.01)
                release.set()
            with trio.fail_after(DEADLINE):
                await mw.stopped.wait()
            assert h2c.goaway is not None
    assert replies == {"h1": 200, "h1_close": 1, "h2": 200}


async def test_connections_over_the_limit_are_closed_and_counted() -> None:
    arrived = trio.Event()
    release = trio.Event()

    async def slow(request: Request) -> Response:
        await request.body.aclose()
        arrived.set()
        await release.wait()
        return Response(200, [(b"content-length", b"2")], BytesBody(b"ok"))

    limits = schema.Limits(max_connections=1)
    async with backend(slow) as port, meshwire(one_route_config(0, port, limits=limits)) as mw:
        async with H1Client.connect(mw.port()) as first, trio.open_nursery() as nursery:
            statuses: list[int] = []

            async def busy() -> None:
                statuses.append((await first.request("GET", "/")).status)

            nursery.start_soon(busy)  # the only connection has a request in flight: not idle
            with trio.fail_after(DEADLINE):
                await arrived.wait()
            extra = await trio.open_tcp_stream("127.0.0.1", mw.port())
            async with extra:
                await extra.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                assert await read_until_eof(extra) == b""
            release.set()
        assert statuses == [200]
        assert mw.stat("http.ingress.downstream_cx_overflow") == 1


async def test_client_rst_stream_cancels_the_upstream_h2_stream() -> None:
    arrived = trio.Event()
    cancelled = trio.Event()

    async def hang(request: Request) -> Response:
        await request.body.aclose()
        arrived.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()  # meshwire reset the upstream stream, so this handler was cancelled
        raise AssertionError("unreachable")

    async with backend(hang) as port:
        config = one_route_config(0, port, upstream_protocol="h2c")
        async with meshwire(config) as mw, H2Client.connect(mw.port()) as client:
            await reset_once_upstream_has_it(client, arrived)
            with trio.fail_after(DEADLINE):
                await cancelled.wait()
        assert mw.stat("http.ingress.downstream_rq_rx_reset") == 1


async def test_client_rst_stream_closes_the_upstream_http1_connection() -> None:
    arrived = trio.Event()
    closed = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        await read_head(stream)
        arrived.set()
        await read_until_eof(stream)  # an HTTP/1.1 request can only be abandoned by closing
        closed.set()

    async with raw_backend(hold) as port:
        async with meshwire(one_route_config(0, port)) as mw, H2Client.connect(mw.port()) as client:
            await reset_once_upstream_has_it(client, arrived)
            with trio.fail_after(DEADLINE):
                await closed.wait()
        assert mw.stat("cluster.backend.upstream_cx_active") == 0


async def reset_once_upstream_has_it(client: H2Client, arrived: trio.Event) -> None:
    sid = await client.start("GET", "/hang")
    with trio.fail_after(DEADLINE):
        await arrived.wait()
    client.conn.reset_stream(sid)
    await client.flush()


async def test_http1_client_hanging_up_cancels_the_upstream_request(tmp_path: Path) -> None:
    arrived = trio.Event()
    cancelled = trio.Event()

    async def hang(request: Request) -> Response:
        await request.body.aclose()
        arrived.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    log = tmp_path / "access.log"
    async with backend(hang) as port:
        config = one_route_config(0, port, upstream_protocol="h2c", access_log=str(log))
        async with meshwire(config) as mw:
            stream = await trio.open_tcp_stream("127.0.0.1", mw.port())
            await stream.send_all(b"GET /long-poll HTTP/1.1\r\nhost: x\r\n\r\n")
            with trio.fail_after(DEADLINE):
                await arrived.wait()
            await stream.aclose()
            with trio.fail_after(DEADLINE):
                await cancelled.wait()
    [entry] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (entry["status"], entry["response_flags"]) == (499, "DC")


async def test_headers_an_upstream_names_in_connection_do_not_reach_the_client() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-internal\r\n"
            b"x-internal: secret\r\nx-public: yes\r\n\r\nok"
        )
        await read_until_eof(stream)

    async with raw_backend(answer) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port()) as client:
            reply = await client.request("GET", "/")
    assert (reply.status, reply.body) == (200, b"ok")
    assert reply.header(b"x-public") == b"yes"
    assert reply.header(b"x-internal") is None  # hop-by-hop by the upstream's own Connection
