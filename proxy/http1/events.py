"""The events an HTTP/1.1 parser hands its connection loop, whichever library parsed the bytes."""

from __future__ import annotations

from proxy.http.model import Headers


class ProtocolError(Exception):
    """The peer sent bytes that are not HTTP/1.1 as we accept it; `status` is what to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Incomplete(ProtocolError):
    """The peer closed the connection in the middle of a message."""


class RequestHead:
    """A request line and its fields (names lower-cased), checked for framing and Host."""

    __slots__ = (
        "authority",
        "expect_continue",
        "headers",
        "keep_alive",
        "length",
        "method",
        "target",
        "version",
    )

    def __init__(self, method: bytes, target: bytes, version: bytes, headers: Headers) -> None:
        self.method = method
        self.target = target
        self.version = version  # b"1.1" or b"1.0"
        self.headers = headers
        self.authority = b""
        self.length: int | None = 0  # None: chunked
        self.keep_alive = True
        self.expect_continue = False


class ResponseHead:
    """A status line and its fields (names lower-cased)."""

    __slots__ = ("framed_twice", "headers", "keep_alive", "length", "status")

    def __init__(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        self.length: int | None = None  # None: chunked or until the connection closes
        self.keep_alive = True
        self.framed_twice = False  # both Content-Length and Transfer-Encoding (RFC 9112 §6.3)


class Data:
    """Body bytes; `chunk_start` when they begin a chunk of a chunked body."""

    __slots__ = ("chunk_start", "data")

    def __init__(self, data: bytes, chunk_start: bool = False) -> None:
        self.data = data
        self.chunk_start = chunk_start


class EndOfMessage:
    """The message is complete; trailers only from a chunked body."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: Headers | None = None) -> None:
        self.trailers = trailers


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Marker("NEED_DATA")  # feed more bytes (or EOF) before asking again
CLOSED = _Marker("CLOSED")  # the peer closed cleanly between messages

Event = RequestHead | ResponseHead | Data | EndOfMessage | _Marker
