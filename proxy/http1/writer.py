"""HTTP/1.1 serialization: heads as one bytes join with one check of every field, and bodies
framed by Content-Length, chunks or the connection's end, the way h11 frames them."""

from __future__ import annotations

import re

from proxy.http.model import Headers

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
# Field lines as RFC 9110 §5.5 has them (no CR, LF or NUL in a value, no OWS around it); with
# the line count this is what stops a header from our own filters injecting another.
_FIELDS = re.compile(
    rb"(?:" + _TOKEN + rb": (?:" + _VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + _VCHAR + rb")?)?\r\n)*"
)
_REQUEST_LINE = re.compile(_TOKEN + rb" [\x21-\x7e]+")
_DIGITS = re.compile(rb"[0-9]+")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Body framings.
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)


class WriteError(Exception):
    """What we were about to send is not valid HTTP/1.1 (a bad field, a body longer or
    shorter than its Content-Length); nothing of the offending part was produced."""


def fields(headers: Headers) -> bytes:
    """Field lines, each ending in CRLF; WriteError if any could be misread."""
    block = b"".join([b"%s: %s\r\n" % field for field in headers])
    if block.count(b"\n") != len(headers) or _FIELDS.fullmatch(block) is None:
        raise WriteError(f"invalid header field in {headers!r}")
    return block


def _field(lowered: bytes, name: bytes) -> bytes | None:
    """The value of the first field `name` (lower-case, with its colon) in a lowered block."""
    if lowered.startswith(name):
        at = 0
    else:
        at = lowered.find(b"\n" + name)
        if at < 0:
            return None
        at += 1
    return lowered[at + len(name) : lowered.find(b"\r\n", at)].strip()


class BodyWriter:
    """Frames one message body: Data chunks, then the end with any trailers."""

    __slots__ = ("left", "mode")

    def __init__(self, mode: int, length: int = 0) -> None:
        self.mode = mode
        self.left = length

    def data(self, chunk: bytes) -> bytes:
        mode = self.mode
        if mode == CHUNKED:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b""
        if mode == UNTIL_CLOSE:
            return chunk
        if len(chunk) > self.left:
            raise WriteError("too much data for the declared Content-Length")
        self.left -= len(chunk)
        return chunk

    def end(self, trailers: Headers | None = None) -> bytes:
        mode = self.mode
        if mode == CHUNKED:
            return b"0\r\n" + fields(trailers) + b"\r\n" if trailers else b"0\r\n\r\n"
        if trailers:
            raise WriteError("trailers need chunked framing")
        if self.left:
            raise WriteError("too little data for the declared Content-Length")
        return b""


def request(method: bytes, target: bytes, headers: Headers) -> tuple[bytes, BodyWriter]:
    """A request head (Host first, as the caller lists it) and its body's framing, from the
    Transfer-Encoding or Content-Length field the caller put in `headers`."""
    line = b"%s %s" % (method, target)
    if _REQUEST_LINE.fullmatch(line) is None:
        raise WriteError(f"invalid request line {line!r}")
    block = fields(headers)
    lowered = block.lower()
    if _field(lowered, b"transfer-encoding:") is not None:
        body = BodyWriter(CHUNKED)
    else:
        length = _field(lowered, b"content-length:")
        body = BodyWriter(LENGTH, _length(length) if length is not None else 0)
    return b"%s HTTP/1.1\r\n%s\r\n" % (line, block), body


def response(
    status: int, reason: bytes, headers: Headers, method: bytes, version: bytes, keep_alive: bool
) -> tuple[bytes, BodyWriter, bool]:
    """A response head, its body's framing and whether the connection stays open after it,
    as h11 decides them: a body of unknown length is chunked for an HTTP/1.1 client and runs
    to the connection's end for an HTTP/1.0 one; a HEAD response has the headers a GET's would."""
    block = fields(headers)
    lowered = block.lower()
    need_close = False
    mode = LENGTH
    length = 0
    if status in (204, 304):
        pass
    elif method == b"CONNECT" and 200 <= status < 300:
        keep_alive = False  # the client now expects a tunnel we do not open: close (as h11 did)
    elif _field(lowered, b"transfer-encoding:") is not None:
        mode = CHUNKED
        if _field(lowered, b"content-length:") is not None:
            headers = [h for h in headers if h[0].lower() != b"content-length"]
            block = fields(headers)
    elif (value := _field(lowered, b"content-length:")) is not None:
        length = _length(value)
    elif version == b"1.1":
        mode = CHUNKED
        block += b"Transfer-Encoding: chunked\r\n"
    else:
        mode = UNTIL_CLOSE
        need_close = method != b"HEAD"
    if not keep_alive or need_close:
        keep_alive = False
        tokens = {b"close"}
        if _field(lowered, b"connection:") is not None:
            kept: Headers = []
            for name, value in headers:
                if name.lower() == b"connection":
                    tokens.update(t.strip() for t in value.lower().split(b","))
                else:
                    kept.append((name, value))
            tokens.discard(b"keep-alive")
            tokens.discard(b"")
            block = fields(kept)
            if mode == CHUNKED and b"transfer-encoding:" not in lowered:
                block += b"Transfer-Encoding: chunked\r\n"
        block += b"".join(b"Connection: %s\r\n" % t for t in sorted(tokens))
    elif (value := _field(lowered, b"connection:")) is not None and b"close" in value:
        keep_alive = False
    if method == b"HEAD":
        mode, length = NONE, 0
    head = b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, block)
    return head, BodyWriter(mode, length), keep_alive


def _length(value: bytes) -> int:
    if _DIGITS.fullmatch(value) is None:
        raise WriteError(f"invalid Content-Length {value!r}")
    return int(value)
