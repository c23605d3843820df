"""The request as the upstream codecs send it: a body held in memory (replayable) or streamed."""

from __future__ import annotations

from proxy.http.errors import UpstreamReset
from proxy.http.model import Body, BytesBody, EmptyBody, Headers

# Bodies up to this size are read up front and sent with the request head in one write.
SMALL_BODY = 65536


class RetryableReset(UpstreamReset):
    """The upstream provably did not process the request: a stale keep-alive connection that died
    before any response byte, or an HTTP/2 stream refused by GOAWAY / REFUSED_STREAM."""


class Outgoing:
    """A prepared request body: `data` when held in memory (then replayable), else `stream`."""

    __slots__ = ("data", "length", "stream", "trailers")

    def __init__(
        self, data: bytes | None, stream: Body | None, trailers: Headers | None, length: int | None
    ) -> None:
        self.data = data
        self.stream = stream
        self.trailers = trailers
        self.length = length

    @property
    def replayable(self) -> bool:
        return self.data is not None


class _PrefixedBody:
    """A streamed body whose first chunks were already pulled while probing its size."""

    __slots__ = ("_body", "_prefix", "length", "trailers")

    def __init__(self, prefix: list[bytes], body: Body) -> None:
        self._prefix = prefix
        self._body = body
        self.length = body.length
        self.trailers: Headers | None = None

    async def read(self) -> bytes:
        if self._prefix:
            return self._prefix.pop(0)
        chunk = await self._body.read()
        if not chunk:
            self.trailers = self._body.trailers
        return chunk

    async def aclose(self) -> None:
        self._prefix.clear()
        await self._body.aclose()


async def prepare(body: Body) -> Outgoing:
    """Hold empty, in-memory and small declared-length bodies in memory; stream everything else."""
    kind = type(body)
    if kind is EmptyBody:
        return Outgoing(b"", None, body.trailers, 0)
    if kind is not BytesBody and (body.length is None or body.length > SMALL_BODY):
        return Outgoing(None, body, None, body.length)
    parts: list[bytes] = []
    size = 0
    while chunk := await body.read():
        parts.append(chunk)
        size += len(chunk)
        if size > SMALL_BODY and kind is not BytesBody:
            # The declared length lied; stream the remainder without buffering it.
            return Outgoing(None, _PrefixedBody(parts, body), None, body.length)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return Outgoing(data, None, body.trailers, len(data))
