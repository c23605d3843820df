"""Cheap exhaustion (issue 12): silent connections, one client's many, stalled request bodies."""

from __future__ import annotations

import contextlib

import msgspec
import trio
from hyperframe.frame import GoAwayFrame, SettingsFrame

from config import schema
from proxy.downstream.negotiate import PREFACE
from proxy.http.model import BytesBody, Request, Response, read_all
from tests.downstream.helpers import parse_frames
from tests.integration.harness import (
    H1Client,
    H2Client,
    Running,
    backend,
    meshwire,
    one_route_config,
)
from tests.integration.test_faults import read_until_eof

DEADLINE = 20  # generous bound on waits; tests never assert elapsed time


async def ok(request: Request) -> Response:
    await read_all(request.body, 1 << 20)
    return Response(200, [(b"content-length", b"2")], BytesBody(b"ok"))


async def wait_for_stat(mw: Running, name: str, value: int) -> None:
    with trio.fail_after(DEADLINE):
        while True:  # a stats gauge has no event to wait on
            if mw.stat(name) == value:
                return
            await trio.sleep(0.01)


async def silent(port: int, n: int, local: str = "127.0.0.1") -> list[trio.SocketStream]:
    """Connections that never send a byte."""
    return [await trio.open_tcp_stream("127.0.0.1", port, local_address=local) for _ in range(n)]


async def served(port: int, local: str = "127.0.0.1") -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    async with stream:
        with trio.fail_after(DEADLINE):
            return (await H1Client(stream).request("GET", "/")).status


def with_max_requests(config: schema.Config, max_requests: int) -> schema.Config:
    clusters = [msgspec.structs.replace(c, max_requests=max_requests) for c in config.clusters]
    return msgspec.structs.replace(config, clusters=clusters)


async def test_a_stalled_body_gets_408_and_frees_its_cluster_slot() -> None:
    limits = schema.Limits(body_idle_timeout=schema.Duration(0.2))
    async with backend(ok) as port:
        config = with_max_requests(one_route_config(0, port, limits=limits), 1)
        async with meshwire(config) as mw:
            slow = await trio.open_tcp_stream("127.0.0.1", mw.port())
            async with slow:
                head = b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n"
                await slow.send_all(head + b"x")  # one byte, then silence: holds the only slot
                answer = await read_until_eof(slow)
            assert answer.startswith(b"HTTP/1.1 408 ")
            async with H1Client.connect(mw.port()) as client:
                assert (await client.request("GET", "/")).status == 200
            assert mw.stat("cluster.backend.upstream_rq_pending_overflow") == 0
            assert mw.stat("http.ingress.downstream_rq_timeout") == 1


async def test_connections_that_send_nothing_are_closed_and_others_are_served() -> None:
    limits = schema.Limits(header_read_timeout=schema.Duration(0.2))  # idle_timeout stays 300 s
    async with backend(ok) as port, meshwire(one_route_config(0, port, limits=limits)) as mw:
        quiet = await silent(mw.port(), 20)
        assert await served(mw.port()) == 200
        for stream in quiet:
            async with stream:
                assert await read_until_eof(stream) == b""  # closed silently, no 408
        await wait_for_stat(mw, "http.ingress.downstream_cx_first_byte_timeout", 20)
        await wait_for_stat(mw, "http.ingress.downstream_cx_active", 0)


async def test_at_max_connections_an_idle_one_makes_room_for_a_new_client() -> None:
    # header_read_timeout is long: only the overload behaviour can let the client in.
    limits = schema.Limits(max_connections=4, header_read_timeout=schema.Duration(30))
    async with backend(ok) as port, meshwire(one_route_config(0, port, limits=limits)) as mw:
        quiet = await silent(mw.port(), 4)
        await wait_for_stat(mw, "http.ingress.downstream_cx_active", 4)
        assert await served(mw.port()) == 200
        async with quiet[0]:
            assert await read_until_eof(quiet[0]) == b""  # the longest-idle one was closed
        assert mw.stat("http.ingress.downstream_cx_idle_evicted") == 1
        assert mw.stat("http.ingress.downstream_cx_overflow") == 0
        for stream in quiet[1:]:
            await stream.aclose()


async def test_one_address_is_capped_and_another_is_served() -> None:
    limits = schema.Limits(max_connections_per_client=2, header_read_timeout=schema.Duration(30))
    async with backend(ok) as port, meshwire(one_route_config(0, port, limits=limits)) as mw:
        quiet = await silent(mw.port(), 2)
        await wait_for_stat(mw, "http.ingress.downstream_cx_active", 2)
        extra = await trio.open_tcp_stream("127.0.0.1", mw.port())
        async with extra:
            await extra.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert await read_until_eof(extra) == b""  # refused at accept
        assert mw.stat("http.ingress.downstream_cx_client_overflow") == 1
        assert await served(mw.port(), local="127.0.0.2") == 200
        for stream in quiet:
            await stream.aclose()
        await wait_for_stat(mw, "http.ingress.downstream_cx_active", 0)
        assert await served(mw.port()) == 200  # 127.0.0.1 is let in again once it closes some


async def test_a_dripping_body_gets_408_and_frees_its_cluster_slot() -> None:
    # A byte every 0.05 s never trips body_idle_timeout; it stays far below min_body_rate.
    limits = schema.Limits(body_idle_timeout=schema.Duration(0.5), min_body_rate=1000)
    async with backend(ok) as port:
        config = with_max_requests(one_route_config(0, port, limits=limits), 1)
        async with meshwire(config) as mw:
            drip = await trio.open_tcp_stream("127.0.0.1", mw.port())
            async with drip, trio.open_nursery() as nursery:

                async def send_slowly() -> None:
                    await drip.send_all(
                        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"
                    )
                    with contextlib.suppress(trio.BrokenResourceError):  # closed on us: done
                        for _ in range(400):  # bounded: 20 s at most
                            await drip.send_all(b"x")
                            await trio.sleep(0.05)

                nursery.start_soon(send_slowly)
                answer = await read_until_eof(drip)
                nursery.cancel_scope.cancel()
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert await served(mw.port()) == 200
            assert mw.stat("cluster.backend.upstream_rq_pending_overflow") == 0


async def test_a_stalled_h2_body_gets_408_and_frees_its_cluster_slot() -> None:
    limits = schema.Limits(body_idle_timeout=schema.Duration(0.2))
    async with backend(ok) as port:
        config = with_max_requests(one_route_config(0, port, limits=limits), 1)
        async with meshwire(config) as mw, H2Client.connect(mw.port()) as client:
            sid = client.conn.get_next_available_stream_id()
            client.done[sid] = trio.Event()
            head = [(b":method", b"POST"), (b":path", b"/upload"), (b":scheme", b"http")]
            head += [(b":authority", b"x"), (b"content-length", b"10")]
            client.conn.send_headers(sid, head)
            client.conn.send_data(sid, b"x")  # one byte, then silence: holds the only slot
            await client.flush()
            with trio.fail_after(DEADLINE):
                await client.done[sid].wait()
            assert client.replies[sid].status == 408
            with trio.fail_after(DEADLINE):
                assert (await client.request("GET", "/")).status == 200
            assert mw.stat("cluster.backend.upstream_rq_pending_overflow") == 0
            assert mw.stat("http.ingress.downstream_rq_timeout") == 1


async def idle_h2(port: int) -> trio.SocketStream:
    """An HTTP/2 connection past its prefaces (the server's SETTINGS read) that opens no stream."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(PREFACE + SettingsFrame(0).serialize())
    data = b""
    with trio.fail_after(DEADLINE):
        while not any(isinstance(f, SettingsFrame) for f in parse_frames(data)):
            chunk = await stream.receive_some(65536)
            assert chunk, "closed before the server's SETTINGS"
            data += chunk
    return stream


async def test_at_max_connections_an_idle_h2_connection_makes_room() -> None:
    limits = schema.Limits(
        max_connections=4,
        header_read_timeout=schema.Duration(30),
        idle_timeout=schema.Duration(30),
    )
    async with backend(ok) as port, meshwire(one_route_config(0, port, limits=limits)) as mw:
        idle = [await idle_h2(mw.port()) for _ in range(4)]
        await wait_for_stat(mw, "http.ingress.downstream_cx_active", 4)
        assert await served(mw.port()) == 200
        async with idle[0]:  # the longest idle: GOAWAY, then closed
            frames = parse_frames(await read_until_eof(idle[0]))
        assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [0]
        assert mw.stat("http.ingress.downstream_cx_idle_evicted") == 1
        assert mw.stat("http.ingress.downstream_cx_overflow") == 0
        for stream in idle[1:]:
            await stream.aclose()
