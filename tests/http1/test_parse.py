"""The parsers, sans I/O: however the corpus bytes are cut into reads, each codec reads the
same requests and responses as from one read, and llhttp is never fed past a message's end."""

from __future__ import annotations

import pytest

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
from tests.http1.corpus import REQUESTS, RESPONSES, RequestCase, ResponseCase

CODECS = [choose("h11"), choose("httptools")]


def requests(codec: Codec, pieces: list[bytes]) -> list[object]:
    """What a server reads from `pieces` then EOF: each request, then how the stream ended."""
    parser = codec.request_parser(65536, 100)
    out: list[object] = []
    queue = [*pieces, b""]
    head: RequestHead | None = None
    body = b""
    while True:
        try:
            event = parser.next_event()
        except Incomplete:
            return [*out, "incomplete"]
        except ProtocolError as exc:
            return [*out, exc.status]
        if event is NEED_DATA:
            parser.feed(queue.pop(0))
        elif event is CLOSED:
            return [*out, "closed"]
        elif type(event) is RequestHead:
            head, body = event, b""
        elif type(event) is Data:
            body += event.data
        elif type(event) is EndOfMessage:
            assert head is not None
            out.append((head.method, head.target, head.headers, body, event.trailers))
            if not head.keep_alive:
                return [*out, "closed"]


def response(codec: Codec, method: bytes, pieces: list[bytes]) -> object:
    """The final response a client reads from `pieces` (no EOF: the connection stays open)."""
    parser = codec.response_parser(method)
    queue = list(pieces)
    status, body = 0, b""
    try:
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                if not queue:
                    return (status, body, "waiting")
                parser.feed(queue.pop(0))
            elif type(event) is ResponseHead:
                status, body = event.status, b""
            elif type(event) is Data:
                body += event.data
            elif type(event) is EndOfMessage:
                return (status, body, event.trailers, bytes(parser.buffer) + b"".join(queue))
    except ProtocolError as exc:
        return exc.status


def cuts(wire: bytes) -> list[list[bytes]]:
    """Every way to cut `wire` in two, and byte by byte."""
    return [[wire[:i], wire[i:]] for i in range(1, len(wire))] + [
        [wire[i : i + 1] for i in range(len(wire))]
    ]


SMALL = [c for c in REQUESTS if len(c.wire) < 2000]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", SMALL, ids=[c.name for c in SMALL])
def test_requests_read_alike_however_cut(codec: Codec, case: RequestCase) -> None:
    whole = requests(codec, [case.wire])
    for pieces in cuts(case.wire):
        assert requests(codec, pieces) == whole, pieces


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", RESPONSES[:11], ids=[c.name for c in RESPONSES[:11]])
def test_responses_read_alike_however_cut(codec: Codec, case: ResponseCase) -> None:
    wire = case.wire + b"HTTP/1.1 200 OK\r\n"  # the start of a next response stays unread
    whole = response(codec, case.method, [wire])
    for pieces in cuts(wire):
        assert response(codec, case.method, pieces) == whole, pieces


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_a_chunked_body_ending_in_the_next_read_leaves_the_next_request(codec: Codec) -> None:
    post = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
    nxt = b"GET /n HTTP/1.1\r\nHost: h\r\n\r\n"
    got = requests(codec, [post, b"\r\n" + nxt])
    assert [r[1] for r in got[:-1]] == [b"/", b"/n"]  # type: ignore[index]
    got = requests(codec, [post + b"X-T: 1\r\n", b"\r\n" + nxt])
    assert [r[1] for r in got[:-1]] == [b"/", b"/n"]  # type: ignore[index]
