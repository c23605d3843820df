"""Request bodies a retry may send again: held in memory, or a stream watched for its first pull."""

from __future__ import annotations

from proxy.http.errors import ProxyError, UpstreamConnectFailure
from proxy.http.model import Body, BytesBody, EmptyBody, Headers, in_memory
from proxy.upstream.outgoing import SMALL_BODY


class WatchedBody:
    """A streamed request body that notes whether an attempt has pulled from (or closed) it.

    `prefix` holds chunks already pulled while probing the size; such a body is touched from the
    start, since those bytes exist nowhere else once an attempt has taken them.
    """

    __slots__ = ("_body", "_prefix", "length", "touched", "trailers")

    def __init__(self, body: Body, prefix: list[bytes] | None = None) -> None:
        self._body = body
        self._prefix = prefix or []
        self.length = body.length
        self.trailers: Headers | None = None
        self.touched = bool(self._prefix)

    async def read(self) -> bytes:
        self.touched = True
        if self._prefix:
            return self._prefix.pop(0)
        chunk = await self._body.read()
        if not chunk:
            self.trailers = self._body.trailers
        return chunk

    async def aclose(self) -> None:
        self.touched = True
        self._prefix.clear()
        await self._body.aclose()


class Replay:
    """Hands each attempt its request body: a fresh copy of in-memory bytes, or the one stream."""

    __slots__ = ("_data", "_stream", "_trailers")

    def __init__(
        self, data: bytes | None, trailers: Headers | None, stream: WatchedBody | None
    ) -> None:
        self._data = data
        self._trailers = trailers
        self._stream = stream

    @classmethod
    async def prepare(cls, body: Body) -> Replay:
        """Hold in-memory and small declared-length bodies in memory; watch everything else."""
        if in_memory(body):
            data = b""
            while chunk := await body.read():  # one chunk at most
                data += chunk
            return cls(data, body.trailers, None)
        if body.length is None or body.length > SMALL_BODY:
            return cls(None, None, WatchedBody(body))
        parts: list[bytes] = []
        size = 0
        while chunk := await body.read():
            parts.append(chunk)
            size += len(chunk)
            if size > SMALL_BODY:
                # The declared length lied: stream the rest, never replay it.
                return cls(None, None, WatchedBody(body, parts))
        return cls(b"".join(parts), body.trailers, None)

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def body(self) -> Body:
        """The body for the next attempt."""
        if self._data is None:
            assert self._stream is not None
            return self._stream
        if not self._data:
            return EmptyBody(self._trailers)
        return BytesBody(self._data, self._trailers)

    def allows(self, error: ProxyError | None) -> bool:
        """Whether the body can go out again after an attempt that ended with `error` (None: a
        response). A stream is sent again only when its connection never opened, so no attempt
        can have taken any of it."""
        if self._data is not None:
            return True
        assert self._stream is not None
        return isinstance(error, UpstreamConnectFailure) and not self._stream.touched
