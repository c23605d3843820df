"""Sans-I/O HTTP/1.1 parsing: heads found and framing decided here, fields parsed by a backend.

A backend (h11 or llhttp) is only ever given the bytes of one message: the head up to its
blank line, then the chunks of a chunked body up to its end (chunk sizes are read here only to
find that end; the backend parses and checks everything). Content-Length bodies are sliced
here. So the bytes after a message stay in `buffer` for the next one (pipelining), and both
backends see exactly the same input.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Protocol

from proxy.http.model import Headers
from proxy.http1.events import (
    CLOSED,
    NEED_DATA,
    Data,
    EndOfMessage,
    Event,
    Incomplete,
    ProtocolError,
    RequestHead,
    ResponseHead,
)

_TERMINATOR = b"\r\n\r\n"
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(_TOKEN + rb" ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_VERSIONS = (b"1.1", b"1.0")

_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _END = range(5)
_SIZE, _DATA, _TRAILERS = range(3)  # where a chunked body is
_HEX = re.compile(rb"[0-9A-Fa-f]+")

# What the field checks look at; one dict lookup per field for all the others.
_HOST, _LEN, _TE, _CONN, _EXPECT = range(5)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _LEN,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"expect": _EXPECT,
}


class Backend(Protocol):
    """A library that parses the fields of one head and the framing of a chunked body."""

    def head(self, head: bytes, method: bytes) -> Headers:
        """The fields of `head` (names lower-cased, values trimmed); raises ProtocolError."""
        ...

    def chunked(self, piece: bytes, out: deque[Event]) -> bool:
        """Parse the next bytes of a chunked body into `out`; True once EndOfMessage is there."""
        ...


class _Parser:
    __slots__ = (
        "_backend",
        "_chunk",
        "_eof",
        "_events",
        "_left",
        "_max_head",
        "_scan",
        "_state",
        "buffer",
    )

    def __init__(self, backend: Backend, max_head: int) -> None:
        self._backend = backend
        self._max_head = max_head
        self._events: deque[Event] = deque()
        self._state = _HEAD
        self._left = 0  # body bytes still to come (Content-Length), or of the current chunk
        self._chunk = _SIZE  # where a chunked body is: _SIZE, _DATA (self._left), _TRAILERS
        self._scan = 0  # where the search for the end of a head resumes
        self._eof = False
        self.buffer: bytes | bytearray = b""

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes received; b"" is the end of the stream."""
        if not data:
            self._eof = True
            return
        buf = self.buffer
        if not buf:
            self.buffer = data if type(data) is bytes else bytes(data)
        elif type(buf) is bytearray:
            buf += data  # a head arriving in pieces: amortized, not a copy per piece
        else:
            grown = bytearray(buf)
            grown += data
            self.buffer = grown

    def _take(self) -> bytes:
        """The whole buffer, as bytes, leaving it empty."""
        buf = self.buffer
        self.buffer = b""
        return buf if type(buf) is bytes else bytes(buf)

    @property
    def clean(self) -> bool:
        """Nothing received after the last message: no byte, no end of stream."""
        return not self.buffer and not self._eof

    def next_event(self) -> Event:
        state = self._state
        if state == _LENGTH:
            return self._sized()
        if state == _CHUNKED:
            return self._chunked()
        if state == _END:
            self._state = _HEAD
            return EndOfMessage()
        if state == _UNTIL_CLOSE:
            if self.buffer:
                return Data(self._take())
            if self._eof:
                self._state = _HEAD
                return EndOfMessage()
            return NEED_DATA
        return self._head()

    def _sized(self) -> Event:
        if not self.buffer:
            if self._eof:
                raise Incomplete("connection closed before the end of the body")
            return NEED_DATA
        buf = self._take()
        left = self._left
        if len(buf) > left:
            self.buffer = buf[left:]
            buf = buf[:left]
        left -= len(buf)
        self._left = left
        if not left:
            self._state = _END
        return Data(buf)

    def _chunked(self) -> Event:
        events = self._events
        while not events:
            buf = self.buffer
            if not buf:
                if self._eof:
                    raise Incomplete("connection closed before the end of the chunked body")
                return NEED_DATA
            cut, ended = self._frame_chunks(buf)
            if not cut:
                if len(buf) > self._max_head:
                    raise ProtocolError("chunk size line or trailers too large", 431)
                if self._eof:
                    raise Incomplete("connection closed before the end of the chunked body")
                return NEED_DATA
            if cut < len(buf):
                piece = buf[:cut]
                rest = buf[cut:]
                self.buffer = rest if type(rest) is bytes else bytes(rest)
            else:
                piece = buf
                self.buffer = b""
            if type(piece) is not bytes:
                piece = bytes(piece)
            if self._backend.chunked(piece, events) != ended:
                # Where the chunks end here and where the backend says they end must agree, or
                # the bytes after them could be read as a request neither side meant.
                raise ProtocolError("malformed chunked body")
        event = events.popleft()
        if type(event) is EndOfMessage:
            self._state = _HEAD
        return event

    def _frame_chunks(self, buf: bytes | bytearray) -> tuple[int, bool]:
        """How much of `buf` belongs to the chunked body (the backend parses and checks it),
        and whether the body ends there: chunk sizes are read only to skip the data, so each
        parser call covers many chunks and the bytes after the body are never fed to it. A
        size line or trailer section not all here yet stays in the buffer (`_scan`: how far
        it has been searched)."""
        pos = 0
        size = len(buf)
        state = self._chunk
        while pos < size:
            if state == _DATA:
                step = min(self._left, size - pos)
                pos += step
                self._left -= step
                if not self._left:
                    state = _SIZE
            elif state == _SIZE:
                eol = buf.find(b"\r\n", pos or max(0, self._scan - 1))
                if eol < 0:
                    break
                digits = _HEX.match(buf, pos, eol)
                pos = eol + 2
                if digits is None:
                    break  # not a size: the backend refuses the line
                length = int(digits[0], 16)
                if length:
                    self._left = length + 2  # the data and its CRLF
                    state = _DATA
                else:
                    state = _TRAILERS
            else:
                if buf.startswith(b"\r\n", pos):
                    end = pos + 2  # no trailers
                else:
                    end = buf.find(_TERMINATOR, pos or max(0, self._scan - 3))
                    if end < 0:
                        break
                    end += 4
                self._chunk = _SIZE
                self._scan = 0
                return end, True
        self._chunk = state
        self._scan = 0 if pos else size
        return pos, False

    def _split_head(self) -> bytes | None:
        """The next head with its blank line, taken off the buffer; None until it is all here."""
        buf = self.buffer
        end = buf.find(_TERMINATOR, self._scan)
        if end < 0:
            if len(buf) > self._max_head:
                raise ProtocolError("head too large", 431)
            start = max(0, self._scan - 2)
            if buf.find(b"\n\n", start) >= 0 or buf.find(b"\n\r\n", start) >= 0:
                raise ProtocolError("a line ends in a bare LF")
            if self._eof:
                if not buf:
                    return None
                raise Incomplete("connection closed in the middle of a head")
            self._scan = max(0, len(buf) - 3)
            return b""
        self._scan = 0
        end += 4
        if end > self._max_head:
            raise ProtocolError("head too large", 431)
        head = buf[:end]
        rest = buf[end:]
        self.buffer = rest if type(rest) is bytes else bytes(rest)
        return head if type(head) is bytes else bytes(head)

    def _head(self) -> Event:
        raise NotImplementedError


class RequestParser(_Parser):
    """Requests off a client connection; `next_event` gives RequestHead, Data, EndOfMessage."""

    __slots__ = ("_max_headers",)

    def __init__(self, backend: Backend, max_head: int, max_headers: int) -> None:
        super().__init__(backend, max_head)
        self._max_headers = max_headers

    def _head(self) -> Event:
        head = self._split_head()
        if not head:
            return CLOSED if head is None else NEED_DATA
        line = _REQUEST_LINE.fullmatch(head, 0, head.find(b"\r\n"))
        if line is None:
            if head[:1] in (b"\r", b"\n"):
                raise ProtocolError("no request line before the blank line")
            raise ProtocolError("malformed request line")
        version = line[2]
        if version not in _VERSIONS:
            raise ProtocolError(f"HTTP/{version.decode()} is not supported")
        method = head[: line.start(1) - 1]
        request = RequestHead(method, line[1], version, self._backend.head(head, method))
        self._check(request)
        length = request.length
        if length is None:
            self._state = _CHUNKED
        elif length:
            self._state = _LENGTH
            self._left = length
        else:
            self._state = _END
        return request

    def _check(self, request: RequestHead) -> None:
        """Framing and Host as RFC 9112 allows them, without the leniencies that smuggle."""
        headers = request.headers
        if len(headers) > self._max_headers:
            raise ProtocolError(f"more than {self._max_headers} header fields", 431)
        hosts = lengths = codings = 0
        for name, value in headers:
            kind = _SPECIAL.get(name)
            if kind is None:
                continue
            if kind == _HOST:
                hosts += 1
                request.authority = value
            elif kind == _LEN:
                lengths += 1
                if _DIGITS.fullmatch(value) is None:
                    raise ProtocolError("bad Content-Length")
                request.length = int(value)
            elif kind == _TE:
                codings += 1
                if value.lower() != b"chunked":
                    raise ProtocolError("only Transfer-Encoding: chunked is supported")
                request.length = None
            elif kind == _CONN:
                if b"close" in _tokens(value):
                    request.keep_alive = False
            elif b"100-continue" in _tokens(value):
                request.expect_continue = True
        if lengths > 1 or codings > 1:
            raise ProtocolError("repeated framing field")
        if lengths and codings:
            # RFC 9112 §6.1: the two framings may be read differently by the next hop (request
            # smuggling); reject, and close since where this request ends is unknowable.
            raise ProtocolError("both Content-Length and Transfer-Encoding")
        if hosts > 1:
            raise ProtocolError("more than one Host field")
        if codings:  # as h11 has it: the coding's name in lower case
            request.headers = [
                (n, v.lower() if n == b"transfer-encoding" else v) for n, v in headers
            ]
        if request.version == b"1.0":
            request.keep_alive = request.expect_continue = False
        elif not hosts:
            raise ProtocolError("an HTTP/1.1 request without Host")


class ResponseParser(_Parser):
    """The response to one request sent upstream; `next_event` gives ResponseHead (1xx ones
    first, if any), Data, EndOfMessage."""

    __slots__ = ("_method",)

    def __init__(self, backend: Backend, max_head: int, method: bytes) -> None:
        super().__init__(backend, max_head)
        self._method = method

    def _head(self) -> Event:
        head = self._split_head()
        if head is None:
            raise Incomplete("connection closed before a response")
        if not head:
            return NEED_DATA
        line = _STATUS_LINE.fullmatch(head, 0, head.find(b"\r\n"))
        if line is None or line[1] not in _VERSIONS:
            raise ProtocolError("malformed status line")
        response = ResponseHead(int(line[2]), self._backend.head(head, self._method))
        self._frame(response, line[1])
        return response

    def _frame(self, response: ResponseHead, version: bytes) -> None:
        """Where the body ends (RFC 9112 §6.3), and whether the connection may be reused."""
        status = response.status
        lengths = codings = 0
        for name, value in response.headers:
            kind = _SPECIAL.get(name)
            if kind == _LEN:
                lengths += 1
                if _DIGITS.fullmatch(value) is None:
                    raise ProtocolError("bad Content-Length")
                response.length = int(value)
            elif kind == _TE:
                codings += 1
                if value.lower() != b"chunked":
                    raise ProtocolError("only Transfer-Encoding: chunked is supported")
            elif kind == _CONN and b"close" in _tokens(value):
                response.keep_alive = False
        if lengths > 1 or codings > 1:
            raise ProtocolError("repeated framing field")
        if version == b"1.0":
            response.keep_alive = False
        if (
            status < 200
            or status in (204, 304)
            or self._method == b"HEAD"
            or (self._method == b"CONNECT" and status < 300)
        ):
            response.length = 0
            self._state = _HEAD if status < 200 else _END
        elif codings:
            response.framed_twice = lengths > 0
            response.length = None
            self._state = _CHUNKED
        elif lengths:
            self._left = response.length or 0
            self._state = _LENGTH if self._left else _END
        else:
            response.keep_alive = False
            self._state = _UNTIL_CLOSE


def _tokens(value: bytes) -> list[bytes]:
    """A comma-separated field value as lower-case tokens."""
    return [token.strip(b" \t") for token in value.lower().split(b",")]
