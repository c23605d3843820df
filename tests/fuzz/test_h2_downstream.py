"""Fuzz the HTTP/2 server codec: real requests interleaved with hostile frames. It never crashes
or hangs, writes only well-formed frames, and a stream's response is that stream's own."""

from __future__ import annotations

import h2.config
import h2.connection
import hpack
import trio
import trio.testing
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import ContinuationFrame, DataFrame, Frame, HeadersFrame
from hypothesis import given
from hypothesis import strategies as st

from config import schema
from proxy.downstream.context import ConnectionContext
from proxy.downstream.negotiate import serve_connection
from proxy.stats import ListenerStats, Stats
from tests.downstream.helpers import raw_frame
from tests.fuzz.invariants import HANG_DEADLINE, bounded_memory, no_errors_logged
from tests.fuzz.requests_h1 import split
from tests.fuzz.test_h1_downstream import echo

LIMITS = schema.Limits(max_header_bytes=4096, max_request_body_bytes=4096)


hostile_frame = st.builds(
    raw_frame,
    kind=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x0B, 0xFF]),  # DATA … ORIGIN, unknown
    flags=st.sampled_from([0, 1, 4, 5, 8, 0x20, 0xFF]),
    stream_id=st.sampled_from([0, 1, 2, 3, 5, 7, 101, 2**31 - 1]),
    payload=st.sampled_from([b"", b"\x00" * 4, b"\x00\x00\x00\x01", b"\x00" * 8, b"\xff" * 6])
    | st.binary(max_size=20),
)


@st.composite
def conversation(draw: st.DrawFn) -> tuple[list[bytes], dict[int, bytes]]:
    """Client byte writes: the preface and K requests (stream id → path), hostile frames among
    them."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    writes = [client.data_to_send()]
    paths: dict[int, bytes] = {}
    for i in range(draw(st.integers(1, 4))):
        stream_id = client.get_next_available_stream_id()
        path = b"/r%d" % i
        body = draw(st.binary(max_size=30))
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"fuzz"),
                   (b":path", path)]  # fmt: skip
        client.send_headers(stream_id, headers, end_stream=not body)
        if body:
            client.send_data(stream_id, body, end_stream=True)
        paths[stream_id] = path
        writes.append(client.data_to_send())
        writes += draw(st.lists(hostile_frame, max_size=3))
    if draw(st.booleans()):  # all in one write: h2 then hands over several events at once
        writes = [b"".join(writes)]
    return writes, paths


async def exchange(pieces: list[bytes]) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    ctx = ConnectionContext(echo, LIMITS, ListenerStats(Stats(), "fuzz"), peer="fuzz")
    received = bytearray()

    async def read_all() -> None:
        try:
            while chunk := await client.receive_some(65536):
                received.extend(chunk)
        except trio.BrokenResourceError:
            pass

    with trio.fail_after(HANG_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_connection, server, ctx)
            nursery.start_soon(read_all)
            try:
                for piece in pieces:
                    await client.send_all(piece)
                    await trio.testing.wait_all_tasks_blocked()
                await client.send_eof()
            except trio.BrokenResourceError:
                pass
    return bytes(received)


def responses(data: bytes) -> dict[int, tuple[bytes, bytes]]:
    """Frames the server wrote, checked for form; stream id → (:status, body) of complete
    responses."""
    decoder = hpack.Decoder()
    block: dict[int, bytes] = {}
    status: dict[int, bytes] = {}
    bodies: dict[int, bytes] = {}
    done: dict[int, tuple[bytes, bytes]] = {}
    at = 0
    while at < len(data):
        assert len(data) - at >= 9, f"a truncated frame header: {data[at:]!r}"
        try:
            frame, length = Frame.parse_frame_header(memoryview(data[at : at + 9]))
        except HyperframeError as exc:
            raise AssertionError(f"the server wrote a malformed frame: {exc}") from exc
        assert len(data) - at - 9 >= length, "a truncated frame"
        frame.parse_body(memoryview(data[at + 9 : at + 9 + length]))
        at += 9 + length
        sid = frame.stream_id
        if isinstance(frame, HeadersFrame | ContinuationFrame):
            block[sid] = block.get(sid, b"") + frame.data
            if "END_HEADERS" in frame.flags:
                fields = dict(decoder.decode(block.pop(sid), raw=True))
                status.setdefault(sid, fields.get(b":status", b""))
        elif isinstance(frame, DataFrame):
            bodies[sid] = bodies.get(sid, b"") + frame.data
        if "END_STREAM" in frame.flags:
            done[sid] = (status.get(sid, b""), bodies.get(sid, b""))
    return done


@given(conversation(), st.lists(st.integers(0, 10_000), max_size=4))
def test_requests_among_hostile_frames(
    talk: tuple[list[bytes], dict[int, bytes]], cuts: list[int]
) -> None:
    writes, paths = talk
    pieces = [p for w in writes for p in split(w, cuts)]
    with no_errors_logged(), bounded_memory():
        out = trio.run(exchange, pieces)
    for sid, (status, body) in responses(out).items():
        if status == b"200":
            assert body == b"echo:" + paths[sid], (sid, body, paths)
