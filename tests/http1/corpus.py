"""One byte corpus for both HTTP/1.1 codecs: requests a client may send and responses an
upstream may send, each with what meshwire must make of it."""

from __future__ import annotations

from dataclasses import dataclass, field

Fields = list[tuple[bytes, bytes]]

H = b"Host: h\r\n"


@dataclass(frozen=True)
class Parsed:
    """A request as the handler must see it."""

    method: bytes
    target: bytes
    headers: Fields
    body: bytes = b""
    trailers: Fields | None = None


@dataclass(frozen=True)
class RequestCase:
    name: str
    wire: bytes
    requests: list[Parsed] = field(default_factory=list)  # served, in order
    status: int | None = None  # the error that ends the connection, if any
    handled: bool = False  # the error comes from the body, after the handler was called
    h11_status: int | None = None  # where h11 is laxer than llhttp (never the other way)


def _get(target: bytes = b"/", headers: Fields | None = None) -> Parsed:
    return Parsed(b"GET", target, headers if headers is not None else [(b"host", b"h")])


POST_CHUNKED = b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
POST_CL = b"POST /p HTTP/1.1\r\n" + H
_CHUNKED_FIELDS = [(b"host", b"h"), (b"transfer-encoding", b"chunked")]

REQUESTS = [
    RequestCase("get", b"GET / HTTP/1.1\r\n" + H + b"\r\n", [_get()]),
    RequestCase(
        "pipelined",
        b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
        [_get(b"/1"), _get(b"/2")],
    ),
    RequestCase(
        "content-length body then pipelined",
        POST_CL + b"Content-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\n" + H + b"\r\n",
        [Parsed(b"POST", b"/p", [(b"host", b"h"), (b"content-length", b"3")], b"abc"), _get(b"/n")],
    ),
    RequestCase(
        "chunked with extension and trailers, then pipelined",
        POST_CHUNKED
        + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\nGET /n HTTP/1.1\r\n"
        + H
        + b"\r\n",
        [Parsed(b"POST", b"/c", _CHUNKED_FIELDS, b"abcde", [(b"x-sum", b"5")]), _get(b"/n")],
    ),
    RequestCase(
        "chunked body holding CRLFCRLF",
        POST_CHUNKED + b"6\r\n\r\n\r\n\r\n\r\n0\r\n\r\n",
        [Parsed(b"POST", b"/c", _CHUNKED_FIELDS, b"\r\n\r\n\r\n")],
    ),
    RequestCase(
        "uppercase chunked",
        POST_CHUNKED.replace(b"chunked", b"CHUNKED") + b"0\r\n\r\n",
        [Parsed(b"POST", b"/c", [(b"host", b"h"), (b"transfer-encoding", b"chunked")])],
    ),
    RequestCase("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", [_get(headers=[])]),
    RequestCase("OWS around a value", b"GET / HTTP/1.1\r\nHost: \t h \t\r\n\r\n", [_get()]),
    RequestCase(
        "empty value",
        b"GET / HTTP/1.1\r\n" + H + b"X:\r\n\r\n",
        [_get(headers=[(b"host", b"h"), (b"x", b"")])],
    ),
    RequestCase(
        "obs-text value",
        b"GET / HTTP/1.1\r\n" + H + b"X: \xe9t\xe9\r\n\r\n",
        [_get(headers=[(b"host", b"h"), (b"x", b"\xe9t\xe9")])],
    ),
    RequestCase(
        "extension method",
        b"FROB /x HTTP/1.1\r\n" + H + b"\r\n",
        [Parsed(b"FROB", b"/x", [(b"host", b"h")])],
    ),
    RequestCase(
        "asterisk-form",
        b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
        [Parsed(b"OPTIONS", b"*", [(b"host", b"h")])],
    ),
    RequestCase(
        "upgrade is an ordinary request, then the next one",
        b"GET /ws HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /n HTTP/1.1\r\n" + H + b"\r\n",
        [
            _get(
                b"/ws", [(b"host", b"h"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")]
            ),
            _get(b"/n"),
        ],
    ),
    RequestCase(
        "Expect without a body keeps the connection",
        b"GET /e HTTP/1.1\r\n"
        + H
        + b"Expect: 100-continue\r\n\r\nGET /n HTTP/1.1\r\n"
        + H
        + b"\r\n",
        [_get(b"/e", [(b"host", b"h"), (b"expect", b"100-continue")]), _get(b"/n")],
    ),
    RequestCase(
        "CONNECT answered 2xx ends the HTTP stream (no tunnel is opened)",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\nGET /n HTTP/1.1\r\n" + H + b"\r\n",
        [Parsed(b"CONNECT", b"h:443", [(b"host", b"h:443")])],
    ),
    # --- refused before the handler: 400 (or 431) and close --------------------------------
    RequestCase("bare LF line ends", b"GET / HTTP/1.1\nHost: h\n\n", status=400),
    RequestCase("one bare LF", b"GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", status=400),
    RequestCase("bare CR", b"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n", status=400),
    RequestCase("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", status=400),
    RequestCase("space before colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", status=400),
    RequestCase("bad name byte", b"GET / HTTP/1.1\r\n" + H + b"X\x01: 1\r\n\r\n", status=400),
    RequestCase("NUL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", status=400),
    RequestCase("DEL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", status=400),
    RequestCase("empty name", b"GET / HTTP/1.1\r\n" + H + b": x\r\n\r\n", status=400),
    RequestCase(
        "CL and TE",
        POST_CL + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        status=400,
    ),
    RequestCase("TE and CL", POST_CHUNKED[:-2] + b"Content-Length: 5\r\n\r\n0\r\n\r\n", status=400),
    RequestCase(
        "repeated equal Content-Length",
        POST_CL + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        status=400,
    ),
    RequestCase("listed Content-Length", POST_CL + b"Content-Length: 1, 1\r\n\r\nx", status=400),
    RequestCase(
        "conflicting Content-Length",
        POST_CL + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        status=400,
    ),
    RequestCase("signed Content-Length", POST_CL + b"Content-Length: +1\r\n\r\nx", status=400),
    RequestCase(
        "huge Content-Length", POST_CL + b"Content-Length: 99999999999999999999\r\n\r\n", status=400
    ),
    RequestCase(
        "xchunked", POST_CHUNKED.replace(b"chunked", b"xchunked") + b"0\r\n\r\n", status=400
    ),
    RequestCase(
        "chunked, identity",
        POST_CHUNKED.replace(b"chunked", b"chunked, identity") + b"0\r\n\r\n",
        status=400,
    ),
    RequestCase(
        "gzip, chunked",
        POST_CHUNKED.replace(b"chunked", b"gzip, chunked") + b"0\r\n\r\n",
        status=400,
    ),
    RequestCase(
        "identity", POST_CHUNKED.replace(b"chunked", b"identity") + b"0\r\n\r\n", status=400
    ),
    RequestCase(
        "TE twice", POST_CHUNKED[:-2] + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status=400
    ),
    RequestCase("no Host", b"GET / HTTP/1.1\r\n\r\n", status=400),
    RequestCase("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status=400),
    RequestCase("HTTP/1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", status=400),
    RequestCase("HTTP/2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", status=400),
    RequestCase("HTTP/0.9", b"GET /\r\n\r\n", status=400),
    RequestCase("two spaces", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", status=400),
    RequestCase("bad method byte", b"G@T / HTTP/1.1\r\n" + H + b"\r\n", status=400),
    RequestCase("space in target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", status=400),
    RequestCase("DEL in target", b"GET /\x7f HTTP/1.1\r\n" + H + b"\r\n", status=400),
    RequestCase("blank line first", b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", status=400),
    RequestCase("head too large", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 70000, status=431),
    RequestCase(
        "too many fields",
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        status=431,
    ),
    # --- refused while the handler reads the body ------------------------------------------
    RequestCase(
        # h11 takes up to 20 hex digits and waits for that much data: the client's EOF ends it.
        "chunk size overflow",
        POST_CHUNKED + b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        status=400,
        handled=True,
        h11_status=499,
    ),
    RequestCase(
        "bad chunk size", POST_CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n", status=400, handled=True
    ),
    RequestCase(
        "chunk data overrun", POST_CHUNKED + b"3\r\nabcX0\r\n\r\n", status=400, handled=True
    ),
]

# --- upstream responses ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseCase:
    name: str
    wire: bytes
    status: int = 200  # 502: meshwire refuses the response
    body: bytes = b""
    headers: Fields = field(default_factory=list)  # fields that must be forwarded
    absent: tuple[bytes, ...] = ()  # fields that must not be
    trailers: Fields | None = None
    reused: bool = True  # the connection carries the next request
    method: bytes = b"GET"


RESPONSES = [
    ResponseCase(
        "content-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nhi",
        body=b"hi",
        headers=[(b"x", b"y")],
    ),
    ResponseCase(
        "chunked with trailers",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n"
        b"0\r\nGrpc-Status: 0\r\n\r\n",
        body=b"hi!",
        trailers=[(b"grpc-status", b"0")],
    ),
    ResponseCase("no reason phrase", b"HTTP/1.1 204\r\n\r\n", status=204),
    ResponseCase(
        "204 ignores Content-Length",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        status=204,
    ),
    ResponseCase(
        "HEAD response has no body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        method=b"HEAD",
        headers=[(b"content-length", b"5")],
    ),
    ResponseCase(
        "100 Continue first",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        body=b"x",
    ),
    ResponseCase(
        "until close", b"HTTP/1.1 200 OK\r\n\r\nall of it", body=b"all of it", reused=False
    ),
    ResponseCase(
        "HTTP/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", body=b"x", reused=False
    ),
    ResponseCase(
        "Connection: close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        body=b"x",
        reused=False,
    ),
    ResponseCase(
        "framed two ways",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        body=b"x",
        absent=(b"content-length", b"transfer-encoding"),
        reused=False,
    ),
    ResponseCase(
        "a byte after the response",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy",
        body=b"x",
        reused=False,
    ),
    # --- refused: 502 ------------------------------------------------------------------------
    ResponseCase("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", status=502),
    ResponseCase(
        "obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", status=502
    ),
    ResponseCase(
        "conflicting Content-Length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        status=502,
    ),
    ResponseCase(
        "repeated Content-Length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        status=502,
    ),
    ResponseCase(
        "xchunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", status=502
    ),
    ResponseCase("two-digit status", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", status=502),
    ResponseCase("HTTP/2.0", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", status=502),
    ResponseCase(
        "101",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        status=502,
    ),
    ResponseCase(
        "bad chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
        status=502,
    ),
    ResponseCase(
        "head too large", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", status=502
    ),
    ResponseCase("not HTTP", b"hello there\r\n\r\n", status=502),
]
