"""Fuzz the HTTP/1.1 server codec with hostile request bytes: it never crashes or hangs, writes
only valid HTTP/1.1, and answers each request it can tell apart with that request's own response."""

from __future__ import annotations

import h11
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from config import schema
from proxy.downstream.context import ConnectionContext
from proxy.downstream.negotiate import serve_connection
from proxy.http.model import BytesBody, Request, Response
from proxy.stats import ListenerStats, Stats
from tests.fuzz.invariants import HANG_DEADLINE, bounded_memory, no_errors_logged
from tests.fuzz.requests_h1 import Sent, mutated, request, split

LIMITS = schema.Limits(max_header_bytes=4096, max_request_body_bytes=4096)


async def echo(request: Request) -> Response:
    """Reads the whole body, then names the request it answers."""
    while await request.body.read():
        pass
    body = b"echo:" + request.target
    return Response(200, [(b"content-length", b"%d" % len(body))], BytesBody(body))


async def exchange(pieces: list[bytes]) -> bytes:
    """Serve one connection that receives `pieces` and then EOF; everything the server wrote."""
    client, server = trio.testing.memory_stream_pair()
    ctx = ConnectionContext(echo, LIMITS, ListenerStats(Stats(), "fuzz"), peer="fuzz")
    received = bytearray()
    with trio.fail_after(HANG_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_connection, server, ctx)
            try:
                for piece in pieces:
                    await client.send_all(piece)
                await client.send_eof()
            except trio.BrokenResourceError:
                pass  # the server closed first (a 400 and close): read what it wrote
            while chunk := await client.receive_some(65536):
                received += chunk
    return bytes(received)


def responses(data: bytes) -> list[tuple[int, bytes]]:
    """The responses in `data`, parsed by h11 as a client; fails on anything invalid."""
    parser = h11.Connection(h11.CLIENT)
    ask = h11.Request(method="GET", target="/", headers=[("host", "x")])
    parser.send(ask)
    parser.send(h11.EndOfMessage())
    parser.receive_data(data)
    parser.receive_data(b"")
    found: list[tuple[int, bytes]] = []
    status, body = 0, b""
    while True:
        event = parser.next_event()
        if isinstance(event, h11.Response):
            status, body = event.status_code, b""
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            found.append((status, body))
            if parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
                continue  # the server said it closes: only ConnectionClosed may follow
            parser.start_next_cycle()
            if not parser.trailing_data[0]:
                return found
            parser.send(ask)
            parser.send(h11.EndOfMessage())
        elif isinstance(event, h11.ConnectionClosed):
            return found
        elif event is h11.NEED_DATA:
            raise AssertionError(f"the server stopped mid-response: {data[-200:]!r}")


def check_alignment(sent: list[Sent], got: list[tuple[int, bytes]]) -> None:
    """Up to and including the first request whose framing lies, response i answers request i."""
    for i, (status, body) in enumerate(got):
        if i >= len(sent):
            raise AssertionError(f"more responses than requests: {got!r}")
        if status == 200:
            assert body == b"echo:" + sent[i].target, (i, sent, got)
        if not sent[i].honest:
            return


@given(st.data(), st.integers(1, 4), st.lists(st.integers(0, 10_000), max_size=6))
def test_request_sequences(data: st.DataObject, count: int, cuts: list[int]) -> None:
    sent = [data.draw(request(i)) for i in range(count)]
    stream = b"".join(s.data for s in sent)
    with no_errors_logged(), bounded_memory():
        out = trio.run(exchange, split(stream, cuts))
    check_alignment(sent, responses(out))


@given(st.data(), st.integers(1, 3), st.lists(st.integers(0, 10_000), max_size=6))
def test_mutated_requests(data: st.DataObject, count: int, cuts: list[int]) -> None:
    stream = b"".join(data.draw(request(i)).data for i in range(count))
    stream = data.draw(mutated(stream))
    with no_errors_logged(), bounded_memory():
        out = trio.run(exchange, split(stream, cuts))
    for status, _ in responses(out):
        assert 100 <= status < 600


@given(st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=4))
def test_raw_bytes(raw: bytes, cuts: list[int]) -> None:
    with no_errors_logged(), bounded_memory():
        out = trio.run(exchange, split(b"GET / HTTP/1.1\r\n" + raw, cuts))
    responses(out)
