"""Differential fuzz of the two HTTP/1.1 parsers: the same bytes, cut anywhere, give the same
requests (method, target, fields, body, trailers) and the same refusal on h11 and llhttp; where
they differ, llhttp is the stricter one, never the laxer."""

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
