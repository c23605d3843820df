"""The fast parser backend: llhttp through httptools, strict (no dangerous leniency set)."""

from __future__ import annotations

from collections import deque

import httptools

from proxy.http.model import Headers
from proxy.http1.events import Data, EndOfMessage, Event, ProtocolError

# llhttp knows a fixed table of methods; HTTP allows any token (RFC 9110 §9.1), and an unknown
# one is parsed here as GET, whose framing rules are the same for a request.
_KNOWN_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH"
    b" SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY"
    b" SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
_STRICT = {
    "lenient_headers": False,
    "lenient_chunked_length": False,
    "lenient_keep_alive": False,
    "lenient_transfer_encoding": False,
    "lenient_version": False,
    "lenient_data_after_close": False,
    "lenient_optional_lf_after_cr": False,
    "lenient_optional_cr_before_lf": False,
    "lenient_optional_crlf_after_chunk": False,
    "lenient_spaces_after_chunk_size": False,
}

# RFC 9112 §6.3: in a response, Transfer-Encoding overrides Content-Length; the client then
# never reuses the connection (ResponseHead.framed_twice).
_RESPONSE_LENIENCY = {**_STRICT, "lenient_chunked_length": True}


class _Collector:
    """httptools callbacks turned into fields and events."""

    __slots__ = ("_chunk_start", "complete", "events", "headers", "in_body", "trailers")

    def __init__(self) -> None:
        self.headers: Headers = []
        self.trailers: Headers = []
        self.in_body = False
        self.complete = False
        self._chunk_start = False
        self.events: deque[Event] = deque()

    def on_message_begin(self) -> None:
        if self.complete:  # never fed past a message's end; if it were, refuse, never guess
            raise ProtocolError("bytes after the end of the message")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp trims the OWS before a value, not after it (RFC 9112 §5.1 allows both).
        field = (name.lower(), value.rstrip(b" \t"))
        if self.in_body:
            self.trailers.append(field)
        else:
            self.headers.append(field)

    def on_headers_complete(self) -> None:
        self.in_body = True

    def on_chunk_header(self) -> None:
        self._chunk_start = True

    def on_body(self, body: bytes) -> None:
        self.events.append(Data(body, self._chunk_start))
        self._chunk_start = False

    def on_message_complete(self) -> None:
        self.events.append(EndOfMessage(self.trailers or None))
        self.complete = True

    def start(self, events: deque[Event]) -> None:
        self.headers = []
        self.trailers = []
        self.in_body = self.complete = self._chunk_start = False
        self.events = events


def _feed(
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser,
    collector: _Collector,
    data: bytes,
) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade or CONNECT: the message ended where the other protocol would begin
    except httptools.HttpParserError as exc:
        raise ProtocolError(str(exc) or type(exc).__name__) from None
    if not collector.in_body:
        raise ProtocolError("incomplete head")


class LlhttpRequests:
    """Parses requests with llhttp; one parser while messages end cleanly, else a new one."""

    __slots__ = ("_collector", "_parser", "_stale")

    def __init__(self, max_head: int) -> None:
        self._collector = _Collector()
        self._parser = self._new()
        self._stale = False

    def _new(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self._collector)
        parser.set_dangerous_leniencies(**_STRICT)
        return parser

    def head(self, head: bytes, method: bytes) -> Headers:
        collector = self._collector
        if self._stale:
            self._parser = self._new()
        collector.start(deque())
        if method not in _KNOWN_METHODS:
            head = b"GET" + head[len(method) :]
        # A body is sliced by the caller or fed piece by piece: until its end is parsed here,
        # the parser is mid-message and the next head needs a new one.
        self._stale = True
        _feed(self._parser, collector, head)
        self._stale = not collector.complete or not self._parser.should_keep_alive()
        return collector.headers

    def chunked(self, piece: bytes, out: deque[Event]) -> bool:
        collector = self._collector
        collector.events = out
        _feed(self._parser, collector, piece)
        if collector.complete:
            self._stale = not self._parser.should_keep_alive()
            return True
        return False


class LlhttpResponses:
    """Parses the response to one request with llhttp."""

    __slots__ = ("_collector", "_parser")

    def __init__(self, method: bytes, max_head: int) -> None:
        self._collector = _Collector()
        self._parser = httptools.HttpResponseParser(self._collector)
        self._parser.set_dangerous_leniencies(**_RESPONSE_LENIENCY)

    def head(self, head: bytes, method: bytes) -> Headers:
        collector = self._collector
        collector.start(deque())
        _feed(self._parser, collector, head)
        return collector.headers

    def chunked(self, piece: bytes, out: deque[Event]) -> bool:
        collector = self._collector
        collector.events = out
        _feed(self._parser, collector, piece)
        return collector.complete
