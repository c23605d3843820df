"""Differential fuzz of the two HTTP/1.1 parsers: the same bytes, cut anywhere, give the same
requests (method, target, fields, body, trailers) and responses, and the same refusal, on h11
and llhttp; where they differ, llhttp is the stricter one, never the laxer."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from proxy.http1.codec import Codec, choose
from proxy.http1.events import (
    CLOSED,
    NEED_DATA,
    Data,
    EndOfMessage,
    Incomplete,
    ProtocolError,
    RequestHead,
    ResponseHead,
)
from tests.fuzz.requests_h1 import mutated, request, split

H11 = choose("h11")
LLHTTP = choose("httptools")
_FIELD = st.sampled_from(
    [
        b"Host: h",
        b"Content-Length: 3",
        b"Content-Length: 1, 1",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"Connection: close",
        b"Expect: 100-continue",
        b"X: a\r\n b",
        b"X : y",
        b"X: \x7f",
        b"X:\ty \t",
        b"Upgrade: h2c",
        b"Connection: upgrade",
    ]
)


@dataclass(frozen=True)
class Outcome:
    requests: list[tuple[bytes, bytes, bytes, object, bytes, object]]
    end: str  # "closed", "incomplete" or "refused <status>"


def parse(codec: Codec, pieces: list[bytes]) -> Outcome:
    """Every complete request in `pieces` (then EOF), and how the stream ended."""
    parser = codec.request_parser(4096, 20)
    done: list[tuple[bytes, bytes, bytes, object, bytes, object]] = []
    head: RequestHead | None = None
    body = b""
    queue = [*pieces, b""]
    try:
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                if not queue:
                    return Outcome(done, "incomplete")
                parser.feed(queue.pop(0))
            elif event is CLOSED:
                return Outcome(done, "closed")
            elif type(event) is RequestHead:
                head, body = event, b""
            elif type(event) is Data:
                body += event.data
            elif type(event) is EndOfMessage:
                assert head is not None
                fields = head.headers
                done.append((head.method, head.target, head.version, fields, body, event.trailers))
                if not head.keep_alive:
                    return Outcome(done, "closed")
    except Incomplete:
        return Outcome(done, "incomplete")
    except ProtocolError as exc:
        return Outcome(done, f"refused {exc.status}")


def check(pieces: list[bytes]) -> None:
    reference = parse(H11, pieces)
    fast = parse(LLHTTP, pieces)
    if fast == reference:
        return
    # llhttp may refuse sooner, never accept more or read a request differently.
    assert fast.requests == reference.requests[: len(fast.requests)], (reference, fast)
    assert fast.end.startswith("refused"), (reference, fast)
    if reference.end.startswith("refused") and len(fast.requests) == len(reference.requests):
        assert fast.end == reference.end, (reference, fast)


@given(st.data(), st.integers(1, 4), st.lists(st.integers(0, 10_000), max_size=6))
def test_request_sequences(data: st.DataObject, count: int, cuts: list[int]) -> None:
    stream = b"".join(data.draw(request(i)).data for i in range(count))
    check(split(stream, cuts))


@given(st.data(), st.integers(1, 3), st.lists(st.integers(0, 10_000), max_size=6))
def test_mutated_requests(data: st.DataObject, count: int, cuts: list[int]) -> None:
    stream = b"".join(data.draw(request(i)).data for i in range(count))
    check(split(data.draw(mutated(stream)), cuts))


@given(
    st.sampled_from([b"GET", b"POST", b"FROB", b"HEAD", b"G T"]),
    st.lists(_FIELD, max_size=5),
    st.binary(max_size=40),
    st.lists(st.integers(0, 200), max_size=3),
)
def test_framing_fields(method: bytes, fields: list[bytes], rest: bytes, cuts: list[int]) -> None:
    wire = method + b" /x HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + rest
    check(split(wire, cuts))


@given(st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=4))
def test_raw_bytes(raw: bytes, cuts: list[int]) -> None:
    check(split(b"GET / HTTP/1.1\r\n" + raw, cuts))


_RESPONSE_FIELD = st.sampled_from(
    [
        b"Content-Length: 3",
        b"Content-Length: 0",
        b"Content-Length: 3, 3",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip",
        b"Connection: close",
        b"X: a\r\n b",
        b"X: \x7f",
        b"Trailer: t",
        b"Server: s",
    ]
)


def respond(codec: Codec, method: bytes, pieces: list[bytes]) -> tuple[object, ...]:
    """The final response read from `pieces` (then EOF): status, fields, body, trailers."""
    parser = codec.response_parser(method)
    queue = [*pieces, b""]
    head: object = None
    body = b""
    try:
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                if not queue:
                    return ("incomplete",)
                parser.feed(queue.pop(0))
            elif type(event) is ResponseHead:
                head, body = (event.status, event.headers, event.length), b""
            elif type(event) is Data:
                body += event.data
            elif type(event) is EndOfMessage:
                return (head, body, event.trailers)
    except Incomplete:
        return ("incomplete",)
    except ProtocolError as exc:
        return ("refused", exc.status)


@given(
    st.sampled_from([b"GET", b"HEAD"]),
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.0 204 No",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified",
            b"HTTP/1.1 2000 X",
            b"HTTP/1.1 200",
        ]
    ),
    st.lists(_RESPONSE_FIELD, max_size=4),
    st.binary(max_size=40) | st.sampled_from([b"abc", b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n"]),
    st.lists(st.integers(0, 200), max_size=3),
)
def test_responses(
    method: bytes, line: bytes, fields: list[bytes], rest: bytes, cuts: list[int]
) -> None:
    wire = line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + rest
    pieces = split(wire, cuts)
    reference = respond(H11, method, pieces)
    fast = respond(LLHTTP, method, pieces)
    assert fast == reference or fast[0] == "refused", (reference, fast)
