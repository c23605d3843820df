"""HTTP/2 codec driven by a real client-side h2 connection over memory streams."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import h2.errors
import h2.events
import h2.exceptions
import pytest
import trio
import trio.lowlevel
import trio.testing
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

from proxy.downstream.h2 import serve_h2
from proxy.h2compat import allow_streams_after_goaway
from proxy.http.errors import DownstreamDisconnect, UpstreamRemoteReset
from proxy.http.model import BytesBody, Request, Response, read_all
from tests.downstream.helpers import (
    H2Client,
    Recorder,
    echo,
    hello,
    pair,
    parse_frames,
    read_to_eof,
    until,
)
from tests.downstream.test_h1 import ChunkBody


async def start(nursery: trio.Nursery, rec: Recorder, **ctx: object) -> H2Client:
    client_stream, server_stream = pair()
    nursery.start_soon(serve_h2, server_stream, rec.context(**ctx))
    client = H2Client(client_stream)
    await client.start()
    return client


def goaway(e: h2.events.Event) -> bool:
    return isinstance(e, h2.events.ConnectionTerminated)


async def test_get(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.request(1, extra=[(b"x-a", b"1"), (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    headers, body, _ = await client.response(1)
    assert headers[b":status"] == b"200"
    assert body == b"hi"
    (req,) = rec.requests
    assert (req.method, req.target, req.authority) == (b"GET", b"/", b"example.com")
    assert (req.http_version, req.scheme) == ("2", b"http")
    assert req.headers == [(b"x-a", b"1"), (b"cookie", b"a=1; b=2")]  # h2 joins cookie crumbs
    assert req.body.length == 0
    assert await req.body.read() == b""
    assert rec.completed == [(req, 200, None)]
    assert rec.stats.rq_2xx.value == 1


async def test_post_with_body(nursery: trio.Nursery) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    await client.request(1, b"POST", b"/up", end=False, extra=[(b"content-length", b"5")])
    client.conn.send_data(1, b"hello", end_stream=True)
    await client.flush()
    headers, body, events = await client.response(1)
    assert (headers[b"x-target"], body) == (b"/up", b"hello")
    assert rec.requests[0].body.length == 5
    # a known small length: END_STREAM rides on the DATA frame
    data_events = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert data_events[-1].stream_ended is not None


async def test_credit_returned_only_as_the_handler_reads(nursery: trio.Nursery) -> None:
    may_read = trio.Event()

    async def handler(request: Request) -> Response:
        await may_read.wait()
        data = await read_all(request.body, 1 << 20)
        return Response(200, [], BytesBody(str(len(data)).encode()))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.request(1, b"POST", end=False)
    window = client.conn.local_flow_control_window(1)
    assert window == 65535
    for _ in range(window // 16384):
        client.conn.send_data(1, b"x" * 16384)
    client.conn.send_data(1, b"x" * (window % 16384))
    await client.flush()
    client.conn.ping(b"12345678")
    await client.flush()
    await client.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived))
    assert not [e for e in client.events if isinstance(e, h2.events.WindowUpdated) and e.stream_id]
    assert client.conn.local_flow_control_window(1) == 0
    may_read.set()
    await client.wait_for(lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == 1)
    client.conn.send_data(1, b"y" * 1000, end_stream=True)
    await client.flush()
    _, body, _ = await client.response(1)
    assert body == str(window + 1000).encode()


async def test_trailers_both_ways(nursery: trio.Nursery) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    await client.request(1, b"POST", end=False, extra=[(b"te", b"trailers")])
    client.conn.send_data(1, b"grpc-frame")
    client.conn.send_headers(1, [(b"grpc-status-in", b"7")], end_stream=True)
    await client.flush()
    headers, body, events = await client.response(1)
    assert headers[b":status"] == b"200"
    assert body == b"grpc-frame"
    assert rec.requests[0].body.trailers == [(b"grpc-status-in", b"7")]
    (trailers,) = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers.headers == [(b"grpc-status-in", b"7")]


async def test_streamed_body_with_trailers_and_hop_headers_dropped(nursery: trio.Nursery) -> None:
    async def handler(request: Request) -> Response:
        body = ChunkBody([b"a" * 70000, b"b"], trailers=[(b"grpc-status", b"0")])
        return Response(200, [(b"connection", b"x"), (b"transfer-encoding", b"chunked")], body)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.request(1)
    headers, body, events = await client.response(1)
    assert b"connection" not in headers
    assert b"transfer-encoding" not in headers
    assert body == b"a" * 70000 + b"b"
    assert any(isinstance(e, h2.events.TrailersReceived) for e in events)


async def test_mixed_case_response_fields_reach_the_client_lowercase(
    nursery: trio.Nursery,
) -> None:
    # h2 no longer normalises what we send (proxy/h2tuning.py); the client's h2 would refuse
    # an uppercase name as a protocol error.
    async def handler(request: Request) -> Response:
        fields = [(b"X-From-Filter", b"1"), (b"Connection", b"close"), (b"Content-Type", b"t/p")]
        return Response(200, fields, BytesBody(b"ok"))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.request(1)
    headers, body, _ = await client.response(1)
    assert (headers[b"x-from-filter"], headers[b"content-type"], body) == (b"1", b"t/p", b"ok")
    assert b"connection" not in headers
    assert b"Connection" not in headers


async def test_rst_stream_cancels_handler(nursery: trio.Nursery) -> None:
    started, cancelled = trio.Event(), trio.Event()

    async def handler(request: Request) -> Response:
        if request.target == b"/ok":
            return await hello(request)
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.request(1, b"POST", end=False)
    with trio.fail_after(5):
        await started.wait()
    client.conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    await client.flush()
    with trio.fail_after(5):
        await cancelled.wait()
    await until(lambda: bool(rec.completed))
    (req, status, exc) = rec.completed[0]
    assert isinstance(exc, DownstreamDisconnect)
    assert status == 499
    assert req.info.response_flags == ["DC"]
    assert rec.stats.rq_reset.value == 1
    # the connection keeps serving
    await client.request(3, path=b"/ok")
    assert (await client.response(3))[1] == b"hi"


async def test_concurrent_streams_and_refused_beyond_limit(nursery: trio.Nursery) -> None:
    gate = trio.Event()
    arrived = 0

    async def handler(request: Request) -> Response:
        nonlocal arrived
        arrived += 1
        await gate.wait()
        return Response(200, [], BytesBody(request.target))

    rec = Recorder(handler, max_concurrent_streams=2)
    client = await start(nursery, rec)
    for sid in (1, 3, 5):  # sent before the server's SETTINGS are read, so h2 lets us
        await client.request(sid, path=b"/%d" % sid)
    refused = await client.wait_for(
        lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == 5
    )
    assert isinstance(refused, h2.events.StreamReset)
    assert refused.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
    await until(lambda: arrived == 2)
    gate.set()
    assert (await client.response(1))[1] == b"/1"
    assert (await client.response(3))[1] == b"/3"


async def test_rapid_reset_gets_enhance_your_calm(nursery: trio.Nursery) -> None:
    rec = Recorder(hello, max_resets_per_second=5)
    client = await start(nursery, rec)
    for sid in range(1, 30, 2):
        client.conn.send_headers(
            sid,
            [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"h")],
        )
        client.conn.reset_stream(sid)
    await client.flush()
    event = await client.wait_for(goaway)
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    await client.wait_eof()


async def test_ping_flood_gets_goaway(nursery: trio.Nursery) -> None:
    rec = Recorder(hello, max_control_frames_per_second=10)
    client = await start(nursery, rec)
    for i in range(20):
        client.conn.ping(b"%08d" % i)
    await client.flush()
    event = await client.wait_for(goaway)
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert rec.stats.cx_protocol_error.value == 1


async def test_empty_data_flood_gets_goaway(nursery: trio.Nursery) -> None:
    rec = Recorder(echo, max_empty_frames=5)
    client = await start(nursery, rec)
    await client.request(1, b"POST", end=False)
    for _ in range(10):
        client.conn.send_data(1, b"")
    await client.flush()
    event = await client.wait_for(goaway)
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


async def test_protocol_error_gets_goaway(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.stream.send_all(
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    )  # bad WINDOW_UPDATE
    event = await client.wait_for(goaway)
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert event.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    await client.wait_eof()


async def test_drain_sends_goaway_and_finishes_open_streams(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def handler(request: Request) -> Response:
        await gate.wait()
        return await hello(request)

    rec = Recorder(handler)
    draining = trio.Event()
    client = await start(nursery, rec, draining=draining)
    await client.request(1)
    await client.wait_for(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
    await until(lambda: bool(rec.requests))
    draining.set()
    await trio.testing.wait_all_tasks_blocked()
    await client.request(3)  # sent before the client reads the GOAWAY: refused
    # h2's client state machine stops at GOAWAY, so read the rest as raw frames.
    raw = await read_until_frame(client, GoAwayFrame)
    gate.set()
    frames = parse_frames(raw + await read_to_eof(client.stream))
    kinds = [(type(f).__name__, f.stream_id) for f in frames]
    assert kinds == [
        ("GoAwayFrame", 0),
        ("RstStreamFrame", 3),
        ("HeadersFrame", 1),
        ("DataFrame", 1),
    ]
    goaway_frame, reset = frames[0], frames[1]
    assert isinstance(goaway_frame, GoAwayFrame)
    assert isinstance(reset, RstStreamFrame)
    assert (goaway_frame.error_code, goaway_frame.last_stream_id) == (0, 1)
    assert reset.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
    assert "END_STREAM" in frames[3].flags
    assert rec.completed[0][1:] == (200, None)


async def read_until_frame(client: H2Client, kind: type[Frame]) -> bytes:
    data = b""
    with trio.fail_after(5):
        while not any(isinstance(f, kind) for f in parse_frames(data)):
            data += await client.stream.receive_some(65536)
    return data


async def test_body_error_resets_only_that_stream(nursery: trio.Nursery) -> None:
    async def handler(request: Request) -> Response:
        if request.target == b"/bad":
            return Response(200, [], ChunkBody([b"abc"], fail=UpstreamRemoteReset()))
        return await hello(request)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.request(1, path=b"/bad")
    _, _, events = await client.response(1)
    (reset,) = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert reset.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(rec.completed[0][2], UpstreamRemoteReset)
    assert rec.completed[0][0].info.response_flags == ["UR"]
    await client.request(3)
    assert (await client.response(3))[1] == b"hi"


async def test_idle_connection_gets_goaway(nursery: trio.Nursery, autojump_clock: object) -> None:
    rec = Recorder(hello, idle_timeout=3.0)
    client = await start(nursery, rec)
    await client.request(1)
    await client.response(1)
    event = await client.wait_for(goaway)
    assert isinstance(event, h2.events.ConnectionTerminated)
    assert event.error_code == h2.errors.ErrorCodes.NO_ERROR
    await client.wait_eof()
    await trio.testing.wait_all_tasks_blocked()
    assert rec.stats.cx_active.value == 0


async def test_no_headers_after_preface_times_out(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    rec = Recorder(hello, header_read_timeout=2.0, idle_timeout=0.0)  # 0: no idle limit
    client = await start(nursery, rec)
    event = await client.wait_for(goaway)
    assert isinstance(event, h2.events.ConnectionTerminated)
    await client.wait_eof()


async def test_too_many_headers_gets_431(nursery: trio.Nursery) -> None:
    rec = Recorder(hello, max_headers=2)
    client = await start(nursery, rec)
    await client.request(1, extra=[(b"x-%d" % i, b"v") for i in range(3)])
    headers, _, _ = await client.response(1)
    assert headers[b":status"] == b"431"
    assert rec.requests == []


async def test_peer_graceful_goaway_lets_open_streams_finish(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def handler(request: Request) -> Response:
        await gate.wait()
        return await hello(request)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    allow_streams_after_goaway(client.conn)  # a client that, like RFC 9113 §6.8, reads on
    await client.request(1)
    await until(lambda: bool(rec.requests))
    client.conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=0)
    await client.flush()
    await trio.testing.wait_all_tasks_blocked()
    gate.set()
    headers, body, _ = await client.response(1)
    assert (headers[b":status"], body) == (b"200", b"hi")
    await client.wait_eof()  # and the server closes once the last stream is done
    assert rec.completed[0][1:] == (200, None)


def _headers_frame_bytes(sid: int, block: bytes) -> bytes:
    """HEADERS with END_STREAM|END_HEADERS for a fresh stream, built by hand."""
    return len(block).to_bytes(3, "big") + b"\x01\x05" + sid.to_bytes(4, "big") + block


async def test_headers_and_rst_in_one_write_spare_the_other_streams(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    gate = trio.Event()
    arrived = 0

    async def handler(request: Request) -> Response:
        nonlocal arrived
        arrived += 1
        await gate.wait()
        return Response(200, [], BytesBody(request.target))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    sids = list(range(1, 200, 2))  # 100 open streams: the limit
    for sid in sids:
        await client.request(sid, path=b"/%d" % sid)
    await until(lambda: arrived == len(sids))
    # HEADERS(201) then RST_STREAM(201) in one write: h2 has closed 201 by the time the server
    # refuses it.
    new = 201
    block = client.conn.encoder.encode(
        [(b":method", b"GET"), (b":path", b"/x"), (b":scheme", b"http"), (b":authority", b"h")]
    )
    rst = RstStreamFrame(new)
    rst.error_code = h2.errors.ErrorCodes.CANCEL
    await client.stream.send_all(_headers_frame_bytes(new, block) + rst.serialize())
    await trio.testing.wait_all_tasks_blocked()
    gate.set()
    for sid in sids:
        assert (await client.response(sid))[1] == b"/%d" % sid
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def ended(sid: int) -> Callable[[h2.events.Event], bool]:
    return lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid


async def test_a_stalled_body_gets_408_and_other_streams_are_served(
    nursery: trio.Nursery,
) -> None:
    rec = Recorder(echo, body_idle_timeout=0.2)
    client = await start(nursery, rec)
    await client.request(1, b"POST", end=False, extra=[(b"content-length", b"10")])
    client.conn.send_data(1, b"x")  # one byte of ten, then nothing more
    await client.flush()
    await client.request(3)  # a GET on the same connection while stream 1 waits
    headers, _, _ = await client.response(3)
    assert headers[b":status"] == b"200"
    headers, _, _ = await client.response(1)
    assert headers[b":status"] == b"408"
    # RFC 9113 §8.1: a complete response before the whole request; the client may stop.
    reset = await client.wait_for(lambda e: isinstance(e, h2.events.StreamReset))
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert rec.stats.rq_timeout.value == 1
    await client.request(5)  # the connection lives on
    assert (await client.response(5))[0][b":status"] == b"200"


async def test_a_dripping_body_below_min_body_rate_gets_408(nursery: trio.Nursery) -> None:
    # A byte every 0.05 s never trips body_idle_timeout; it stays far below min_body_rate.
    rec = Recorder(echo, body_idle_timeout=0.5, min_body_rate=1000)
    client = await start(nursery, rec)
    await client.request(1, b"POST", end=False, extra=[(b"content-length", b"1000")])

    async def drip() -> None:
        # Only this task writes until the stream ends; the test's task only reads.
        with contextlib.suppress(h2.exceptions.ProtocolError):  # reset: done
            for _ in range(400):  # bounded: 20 s at most
                client.conn.send_data(1, b"x")
                await client.flush()
                await trio.sleep(0.05)

    async with trio.open_nursery() as dripping:
        dripping.start_soon(drip)
        with trio.fail_after(20):
            while not any(ended(1)(e) for e in client.events):
                data = await client.stream.receive_some(65536)
                assert data, f"EOF; events so far {client.events!r}"
                client.events += client.conn.receive_data(data)
        dripping.cancel_scope.cancel()
    status = next(e for e in client.events if isinstance(e, h2.events.ResponseReceived))
    assert dict(status.headers)[b":status"] == b"408"
    assert rec.stats.rq_timeout.value == 1


@pytest.mark.parametrize("served_one", [False, True])
async def test_an_evicted_idle_connection_gets_goaway(
    nursery: trio.Nursery, served_one: bool
) -> None:
    rec = Recorder(hello, header_read_timeout=100.0, idle_timeout=100.0)
    ctx = rec.context()
    client_stream, server_stream = pair()
    nursery.start_soon(serve_h2, server_stream, ctx)
    client = H2Client(client_stream)
    await client.start()
    await client.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    if served_one:  # idle again once its only stream has ended, with no byte from us since
        await client.request(1)
        with trio.fail_after(5):
            while not any(ended(1)(e) for e in client.events):
                client.events += client.conn.receive_data(await client.stream.receive_some())
    await trio.testing.wait_all_tasks_blocked()  # the server has read our last frames
    assert len(ctx.idle) == 1
    assert ctx.idle.evict()
    end = await client.wait_for(goaway)
    assert end.error_code == h2.errors.ErrorCodes.NO_ERROR
    await client.wait_eof()


async def test_an_open_stream_is_not_evicted(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def wait(request: Request) -> Response:
        await gate.wait()
        return Response.text(200, "late")

    rec = Recorder(wait)
    ctx = rec.context()
    client_stream, server_stream = pair()
    nursery.start_soon(serve_h2, server_stream, ctx)
    client = H2Client(client_stream)
    await client.start()
    await client.request(1)
    await until(lambda: len(rec.requests) == 1)
    assert not ctx.idle.evict()
    gate.set()
    assert (await client.response(1))[1] == b"late"


async def test_under_overload_an_idle_connection_waits_less(nursery: trio.Nursery) -> None:
    # At max_connections a wait gets a tenth of its timeout: 10 s (beyond the 5 s bound of
    # wait_for) becomes 1 s.
    rec = Recorder(hello, max_connections=10, idle_timeout=10.0)
    rec.stats.cx_active.value = 10
    client = await start(nursery, rec)
    await client.request(1)
    assert (await client.response(1))[0][b":status"] == b"200"
    assert (await client.wait_for(goaway)).error_code == h2.errors.ErrorCodes.NO_ERROR
