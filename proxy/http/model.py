"""Request, Response and pulled streaming bodies: the vocabulary codecs and filters share."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from filters.tracing.state import RequestTrace

# Header names are lower-case bytes, values are bytes, order and repeats are kept (HTTP/2 and h11
# both hand us exactly this, so no per-request re-encoding is needed on the hot path).
Header = tuple[bytes, bytes]
Headers = list[Header]


def header_get(headers: Iterable[Header], name: bytes) -> bytes | None:
    """First value of `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


# Connection-specific fields (RFC 9110 §7.6.1; forbidden in HTTP/2 by RFC 9113 §8.2.2): each
# codec frames its own message, so these never cross from one connection to another.
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class Body(Protocol):
    """A message body the consumer pulls chunk by chunk.

    `read()` returns the next non-empty chunk, or b"" once the body has ended; after that,
    `trailers` holds the trailing headers (or None). Pulling is the backpressure: a producer reads
    from its socket (or returns HTTP/2 flow-control credit) only when a chunk is consumed.
    `aclose()` abandons the rest of the body; it never raises and is safe to call twice.
    `length` is the declared length (Content-Length) when known.
    """

    length: int | None
    trailers: Headers | None

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class EmptyBody:
    """A body with no bytes."""

    __slots__ = ("trailers",)
    length: int | None = 0

    def __init__(self, trailers: Headers | None = None) -> None:
        self.trailers = trailers

    async def read(self) -> bytes:
        return b""

    async def aclose(self) -> None:
        return None


class BytesBody:
    """A body held in memory (direct responses, error pages, buffered bodies)."""

    __slots__ = ("_data", "length", "trailers")

    def __init__(self, data: bytes, trailers: Headers | None = None) -> None:
        self._data: bytes | None = data if data else None
        self.length: int | None = len(data)
        self.trailers = trailers

    async def read(self) -> bytes:
        data, self._data = self._data, None
        return data or b""

    async def aclose(self) -> None:
        self._data = None


def in_memory(body: Body) -> bool:
    """True for bodies already whole in memory: nothing left to time out, wait for or track."""
    return type(body) is BytesBody or type(body) is EmptyBody


class StreamInfo:
    """Per-request facts gathered along the chain, read by access log, stats and tracing."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "client_address",
        "downstream_addr",
        "downstream_tls",
        "peer_identity",
        "request_id",
        "response_flags",
        "route_name",
        "start",
        "trace",
        "upstream_cluster",
        "upstream_host",
    )

    def __init__(self, downstream_addr: str = "", downstream_tls: bool = False) -> None:
        self.start = time.monotonic()
        self.downstream_addr = downstream_addr
        self.downstream_tls = downstream_tls
        # The trusted client address when x-forwarded-for named it; None: the peer itself.
        self.client_address: str | None = None
        self.peer_identity: str | None = None
        self.request_id: bytes | None = None
        self.response_flags: list[str] = []
        self.route_name: str | None = None
        self.upstream_cluster: str | None = None
        self.upstream_host: str | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        # Set by the tracing filter: the SERVER span the upstream attempts are children of.
        self.trace: RequestTrace | None = None

    def add_flag(self, flag: str) -> None:
        if flag not in self.response_flags:
            self.response_flags.append(flag)

    @property
    def downstream_host(self) -> str:
        """The client's host, without the port: `downstream_addr` is `host:port` or `[v6]:port`."""
        addr = self.downstream_addr
        host = addr.rpartition(":")[0] if addr.count(":") == 1 or "]" in addr else addr
        return host.strip("[]")

    @property
    def client_host(self) -> str:
        """The trusted client address: from x-forwarded-for when trusted, else the peer."""
        return self.client_address or self.downstream_host

    @property
    def flags_text(self) -> str:
        """Envoy's rendering: comma-joined flags, '-' when none."""
        return ",".join(self.response_flags) or "-"


class Request:
    """One HTTP request as filters see it, whatever the protocol it arrived on.

    `target` is the raw request-target (path and query) exactly as received; `authority` comes
    from `:authority` (HTTP/2) or `Host` (HTTP/1.1) and is not repeated in `headers` for HTTP/2.
    `http_version` is "1.0", "1.1" or "2".
    """

    __slots__ = (
        "authority",
        "body",
        "headers",
        "http_version",
        "info",
        "method",
        "scheme",
        "target",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: Body,
        *,
        scheme: bytes = b"http",
        authority: bytes = b"",
        http_version: str = "1.1",
        info: StreamInfo | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.scheme = scheme
        self.authority = authority
        self.http_version = http_version
        self.info = info if info is not None else StreamInfo()

    @property
    def path(self) -> bytes:
        """The target without its query string."""
        q = self.target.find(b"?")
        return self.target if q < 0 else self.target[:q]


class Response:
    """One HTTP response; its body is pulled by the downstream writer."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, headers: Headers | None = None, body: Body | None = None
    ) -> None:
        self.status = status
        self.headers: Headers = headers if headers is not None else []
        self.body: Body = body if body is not None else EmptyBody()

    @classmethod
    def text(cls, status: int, text: str, headers: Headers | None = None) -> Response:
        data = text.encode()
        hdrs: Headers = [(b"content-type", b"text/plain; charset=utf-8")]
        if headers:
            hdrs.extend(headers)
        hdrs.append((b"content-length", str(len(data)).encode()))
        return cls(status, hdrs, BytesBody(data))


async def read_all(body: Body, limit: int) -> bytes:
    """Buffer a whole body; RequestTooLarge past `limit` bytes (the rest is dropped)."""
    from proxy.http.errors import RequestTooLarge

    if body.length is not None and body.length > limit:
        await body.aclose()
        raise RequestTooLarge(f"body of {body.length} bytes exceeds the limit of {limit}")
    parts: list[bytes] = []
    size = 0
    while chunk := await body.read():
        size += len(chunk)
        if size > limit:
            await body.aclose()
            raise RequestTooLarge(f"body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
