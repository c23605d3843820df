"""Per-stream HTTP/2 client state: request headers, the body upload, the pulled response body."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions
import trio

from proxy.http.errors import ProxyError, UpstreamReset
from proxy.http.model import CONNECTION_SPECIFIC, Body, Headers, Request

if TYPE_CHECKING:
    from proxy.upstream.h2 import H2ClientConnection

# h2 raises these when a stream or the connection is already gone.
_H2_ERRORS = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)

_DROP = CONNECTION_SPECIFIC | {b"host"}  # host travels as :authority


def request_headers(request: Request, scheme: bytes, default_authority: bytes) -> Headers:
    """Pseudo-headers first, then the request's headers minus connection-specific ones."""
    authority = request.authority
    headers: Headers = []
    for item in request.headers:
        name = item[0]
        if not name.islower():
            name = name.lower()  # RFC 9113 §8.2.1; h2 does not normalise again (proxy/h2tuning.py)
            item = (name, item[1])
        if name in _DROP or name[:1] == b":":
            if name == b"host" and not authority:
                authority = item[1]
            continue
        if name == b"te" and item[1].lower() != b"trailers":
            continue
        headers.append(item)
    return [
        (b":method", request.method),
        (b":scheme", scheme),
        (b":authority", authority or default_authority),
        (b":path", request.target),
        *headers,
    ]


def trailer_fields(trailers: Headers) -> Headers:
    """Trailers as HTTP/2 allows them: lowercase, no pseudo-header, nothing connection-specific."""
    out: Headers = []
    for name, value in trailers:
        if not name.islower():
            name = name.lower()
        if name not in _DROP and name[:1] != b":":
            out.append((name, value))
    return out


class H2Stream:
    """Per-stream state filled by the connection's reader task and drained by the consumer."""

    __slots__ = (
        "_event",
        "chunks",
        "ended",
        "error",
        "finished",
        "headers",
        "id",
        "status",
        "trailers",
        "upload",
    )

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.status = 0
        self.headers: Headers | None = None
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.ended = False
        self.trailers: Headers | None = None
        self.error: ProxyError | None = None
        self.finished = False
        self.upload: H2Upload | None = None
        self._event: trio.Event | None = None

    def wake(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self) -> None:
        self._event = event = trio.Event()
        await event.wait()

    def fail(self, error: ProxyError) -> None:
        if not self.ended and self.error is None:
            self.error = error
            self.wake()


class H2Upload:
    """Sends the rest of a request body (and its trailers) as the peer's window allows."""

    __slots__ = ("body", "conn", "leftover", "scope", "stream", "trailers")

    def __init__(
        self,
        conn: H2ClientConnection,
        stream: H2Stream,
        leftover: bytes,
        body: Body | None,
        trailers: Headers | None,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.leftover = leftover
        self.body = body
        self.trailers = trailers
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        conn, stream = self.conn, self.stream
        try:
            with self.scope:
                if self.leftover:
                    await conn.send_data(stream, self.leftover)
                    self.leftover = b""
                trailers = self.trailers
                if self.body is not None:
                    while chunk := await self.body.read():
                        await conn.send_data(stream, chunk)
                    trailers = self.body.trailers
                if trailers:
                    conn.h2.send_headers(stream.id, trailer_fields(trailers), end_stream=True)
                else:
                    conn.h2.end_stream(stream.id)
                await conn.flush()
        except (ProxyError, *_H2_ERRORS):
            pass  # the stream or connection is gone; the response side reports it
        except Exception as exc:
            # The request body itself failed (downstream gone): abandon the stream.
            stream.fail(UpstreamReset(f"request body failed: {exc!r}"))
            conn.reset(stream)
            await conn.nudge()


class H2Body:
    """A response body pulled from a stream; consuming a chunk returns its flow-control credit."""

    __slots__ = ("_conn", "_stream", "length", "trailers")

    def __init__(self, conn: H2ClientConnection, stream: H2Stream, length: int | None) -> None:
        self._conn = conn
        self._stream = stream
        self.length = length
        self.trailers: Headers | None = None

    async def read(self) -> bytes:
        stream, conn = self._stream, self._conn
        try:
            while True:
                if stream.chunks:
                    data, flow = stream.chunks.popleft()
                    if not stream.finished:
                        conn.h2.acknowledge_received_data(flow, stream.id)
                        await conn.nudge()
                    if data:
                        return data
                    continue
                if stream.error is not None:
                    raise stream.error
                if stream.ended or stream.finished:
                    if not stream.finished:
                        self.trailers = stream.trailers
                        await conn.finish(stream, error=False)
                    return b""
                await stream.wait()
        except BaseException as exc:
            await conn.finish(stream, error=isinstance(exc, ProxyError))
            raise

    async def aclose(self) -> None:
        await self._conn.finish(self._stream, error=False)
