"""One HTTP/2 stream: its flow-controlled request body and the writer for its response."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from proxy.downstream.common import HOP_BY_HOP, body_deadline
from proxy.http.errors import StreamIdleTimeout
from proxy.http.model import Body, Headers, Request, Response

if TYPE_CHECKING:
    from proxy.downstream.h2 import H2Server

COALESCE_LIMIT = 65536  # known-length bodies up to this size go out with the HEADERS in one write
INTERNAL_ERROR = 0x2

_STATUS: dict[int, bytes] = {}


class H2Body:
    """Request DATA buffered by the reader; credit goes back to the peer only as chunks are read."""

    __slots__ = (
        "_chunks",
        "_error",
        "_server",
        "_wakeup",
        "closed",
        "due",
        "ended",
        "length",
        "received",
        "stream_id",
        "trailers",
    )

    def __init__(self, server: H2Server, stream_id: int, length: int | None) -> None:
        self._server = server
        self.stream_id = stream_id
        self.length = length
        self.trailers: Headers | None = None
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._wakeup: trio.Event | None = None
        self._error: BaseException | None = None
        self.ended = False
        self.closed = False
        self.received = 0
        self.due = 0.0  # see body_deadline

    # --- fed by the connection's reader (synchronous) ------------------------------------------

    def feed(self, data: bytes, flow_len: int) -> None:
        self._chunks.append((data, flow_len))
        self.received += len(data)
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._wake()

    def discard(self) -> int:
        """Drop what was never read; returns the flow-controlled bytes still owed to the peer."""
        self.closed = True
        owed = sum(n for _, n in self._chunks)
        self._chunks.clear()
        return owed

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    # --- Body ------------------------------------------------------------------------------------

    async def read(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.ended or self.closed:
                return b""
            self._wakeup = wakeup = trio.Event()
            with trio.CancelScope(deadline=body_deadline(self._server.ctx.limits, self)):
                await wakeup.wait()
                continue
            self._wakeup = None
            self._server.ctx.stats.rq_timeout.inc()
            # The rescue answers 408; _release then resets the stream (the body never ended).
            self._error = exc = StreamIdleTimeout(
                "request body stalled (body_idle_timeout, min_body_rate)"
            )
            raise exc
        data, flow_len = self._chunks.popleft()
        if flow_len:
            await self._server.acknowledge(self.stream_id, flow_len)
        return data

    async def aclose(self) -> None:
        owed = self.discard()
        if owed:
            await self._server.acknowledge(self.stream_id, owed)


class H2Stream:
    """Per-stream state the connection keeps while the stream's task runs."""

    __slots__ = ("body", "id", "request", "scope", "status", "too_many_headers", "window")

    def __init__(self, stream_id: int, request: Request, body: H2Body | None) -> None:
        self.id = stream_id
        self.request = request
        self.body = body
        self.scope = trio.CancelScope()
        self.window = trio.Event()
        self.status: int | None = None
        self.too_many_headers = False


def _status(code: int) -> bytes:
    value = _STATUS.get(code)
    if value is None:
        value = _STATUS[code] = str(code).encode()
    return value


def _clean(headers: Headers) -> Headers:
    """Lowercase names and drop connection-specific fields, as HTTP/2 requires (RFC 9113 §8.2);
    h2 itself does not check outbound headers again (proxy/h2tuning.py)."""
    out: Headers = []
    for name, value in headers:
        if not name.islower():
            name = name.lower()
        if name in HOP_BY_HOP or name[:1] == b":":
            continue
        if name == b"te" and value.lower() != b"trailers":
            continue
        out.append((name, value))
    return out


async def _send_data(server: H2Server, st: H2Stream, data: bytes, end_stream: bool) -> None:
    """Queue DATA frames within the peer's windows, waiting for WINDOW_UPDATE when exhausted."""
    h2 = server.h2
    offset, total = 0, len(data)
    while True:
        window = min(h2.local_flow_control_window(st.id), h2.max_outbound_frame_size)
        if window <= 0:
            # Arm the event before flushing: an update that lands while we write must wake us.
            st.window = wakeup = trio.Event()
            await server.flush()
            if h2.local_flow_control_window(st.id) <= 0:
                await wakeup.wait()
            continue
        piece = data[offset : offset + window]
        offset += len(piece)
        last = offset >= total
        h2.send_data(st.id, piece, end_stream=end_stream and last)
        server.budget.data_sent()  # one DATA frame: piece fits max_outbound_frame_size
        st.request.info.bytes_sent += len(piece)
        if last:
            return


async def send_response(
    server: H2Server, st: H2Stream, request: Request, response: Response
) -> None:
    """Write HEADERS, DATA and trailers; a failing body resets this stream and re-raises."""
    h2 = server.h2
    sid = st.id
    body: Body = response.body
    status = st.status = response.status
    headers: Headers = [(b":status", _status(status)), *_clean(response.headers)]
    if request.method == b"HEAD" or status in (204, 304):
        await body.aclose()
        h2.send_headers(sid, headers, end_stream=True)
        await server.flush()
        return
    try:
        length = body.length
        if length is not None and length <= COALESCE_LIMIT:
            parts: list[bytes] = []
            while chunk := await body.read():
                parts.append(chunk)
            data = b"".join(parts)
            trailers = body.trailers
            h2.send_headers(sid, headers, end_stream=not data and not trailers)
            if data:
                await _send_data(server, st, data, end_stream=not trailers)
            if trailers:
                h2.send_headers(sid, _clean(trailers), end_stream=True)
            await server.flush()
            return
        h2.send_headers(sid, headers)
        await server.flush()
        sent = 0
        chunk = await body.read()
        while chunk:
            following: bytes | None = None
            if length is not None and sent + len(chunk) >= length:
                following = await body.read()  # peek for the end so END_STREAM rides on this DATA
            last = following == b"" and not body.trailers
            await _send_data(server, st, chunk, end_stream=last)
            await server.flush()
            if last:
                return
            sent += len(chunk)
            chunk = following if following is not None else await body.read()
        if body.trailers:
            h2.send_headers(sid, _clean(body.trailers), end_stream=True)
        else:
            h2.end_stream(sid)
        await server.flush()
    except Exception:
        await body.aclose()
        await server.reset(sid, INTERNAL_ERROR)
        raise
