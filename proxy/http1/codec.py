"""The HTTP/1.1 codec a config names: llhttp (httptools) when importable, else h11."""

from __future__ import annotations

from collections.abc import Callable

from proxy.http1.h11_backend import H11Requests, H11Responses
from proxy.http1.parse import Backend, RequestParser, ResponseParser

NAMES = ("auto", "h11", "httptools")
UPSTREAM_MAX_HEAD = 65536  # a response head from an upstream, as h11's default allowed


class CodecUnavailable(ValueError):
    """The config names a codec whose library is not installed."""


class Codec:
    """Makes the parsers of one codec; the writer (proxy/http1/writer.py) is the same for all."""

    __slots__ = ("_requests", "_responses", "name")

    def __init__(
        self,
        name: str,
        requests: Callable[[int], Backend],
        responses: Callable[[bytes, int], Backend],
    ) -> None:
        self.name = name
        self._requests = requests
        self._responses = responses

    def request_parser(self, max_head: int, max_headers: int) -> RequestParser:
        """A parser for the requests of one client connection."""
        return RequestParser(self._requests(max_head), max_head, max_headers)

    def response_parser(self, method: bytes) -> ResponseParser:
        """A parser for the response to one request of `method`."""
        return ResponseParser(self._responses(method, UPSTREAM_MAX_HEAD), UPSTREAM_MAX_HEAD, method)

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"


H11 = Codec("h11", H11Requests, H11Responses)


def choose(name: str) -> Codec:
    """The codec for a config's `codec` value; CodecUnavailable for httptools without it."""
    if name == "h11":
        return H11
    try:
        from proxy.http1.llhttp_backend import LlhttpRequests, LlhttpResponses
    except ImportError:
        if name == "httptools":
            raise CodecUnavailable(
                "codec httptools: the httptools package is not installed"
            ) from None
        return H11
    return Codec("httptools", LlhttpRequests, LlhttpResponses)


AUTO = choose("auto")  # what a component built without a config uses
