"""HTTP/1.1 codec driven with raw bytes over memory streams."""

from __future__ import annotations

import json
import logging

import pytest
import trio
import trio.testing

from proxy.downstream.h1 import serve_h1
from proxy.http.errors import DownstreamDisconnect, UpstreamRemoteReset
from proxy.http.model import BytesBody, Headers, Request, Response
from tests.downstream.helpers import (
    Recorder,
    echo,
    hello,
    pair,
    read_to_eof,
    read_until,
    until,
)

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Thing: one\r\n\r\n"
HI = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\r\nhi"


class ChunkBody:
    """A streaming body of unknown length, optionally failing after its chunks."""

    def __init__(
        self, chunks: list[bytes], fail: Exception | None = None, trailers: Headers | None = None
    ) -> None:
        self.length: int | None = None
        self.trailers = trailers
        self._chunks = list(chunks)
        self._fail = fail
        self.closed = False

    async def read(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._fail is not None:
            raise self._fail
        return b""

    async def aclose(self) -> None:
        self.closed = True


async def start(nursery: trio.Nursery, rec: Recorder, **ctx: object) -> trio.abc.Stream:
    client, server = pair()
    nursery.start_soon(serve_h1, server, rec.context(**ctx))
    return client


async def test_get_parsed_and_exact_response(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(GET)
    assert await read_until(client, b"hi") == HI
    (req,) = rec.requests
    assert (req.method, req.target, req.path) == (b"GET", b"/a?b=1", b"/a")
    assert req.headers == [(b"host", b"example.com"), (b"x-thing", b"one")]
    assert (req.authority, req.scheme, req.http_version) == (b"example.com", b"http", "1.1")
    assert req.info.downstream_addr == "10.0.0.1:4321"
    assert rec.completed == [(req, 200, None)]
    assert rec.stats.rq_2xx.value == 1
    assert rec.stats.rq_total.value == 1


async def test_byte_by_byte_and_keep_alive(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec, tls=True)
    for _ in range(2):
        for i in range(len(GET)):
            await client.send_all(GET[i : i + 1])
        assert await read_until(client, b"hi") == HI
    assert len(rec.requests) == 2
    assert rec.requests[0].scheme == b"https"
    assert rec.stats.cx_total.value == 1


async def test_pipelined_requests_answered_in_order(nursery: trio.Nursery) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3))
    await client.send_all(reqs)
    out = await read_until(client, b"x-target: /2")
    assert out.index(b"target: /0") < out.index(b"target: /1") < out.index(b"target: /2")


async def test_post_body_echoed_and_http10(nursery: trio.Nursery) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    await client.send_all(b"POST /p HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
    out = await read_to_eof(client)  # HTTP/1.0 without keep-alive: closed after the response
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n\r\nhello")
    assert rec.requests[0].http_version == "1.0"
    assert rec.requests[0].body.length == 5


async def test_chunked_request_with_trailers_and_chunked_response_trailers(
    nursery: trio.Nursery,
) -> None:
    seen: list[Headers | None] = []

    async def handler(request: Request) -> Response:
        assert request.body.length is None
        data = b""
        while chunk := await request.body.read():
            data += chunk
        seen.append(request.body.trailers)
        return Response(200, [], ChunkBody([data], trailers=[(b"grpc-status", b"0")]))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
    )
    out = await read_until(client, b"grpc-status: 0\r\n\r\n")
    assert seen == [[(b"x-sum", b"5")]]
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"5\r\nabcde\r\n0\r\ngrpc-status: 0\r\n\r\n")


async def test_expect_continue_sent_only_when_body_read(nursery: trio.Nursery) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    await client.send_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    assert await read_until(client, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send_all(b"abc")
    out = await read_until(client, b"abc")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_expect_continue_not_sent_when_body_unread(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    out = await read_to_eof(client)
    assert b"100 Continue" not in out
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in out


async def test_head_gets_headers_only_and_connection_reused(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    out = await read_until(client, b"\r\n\r\nhi")
    head = HI[: -len(b"hi")]
    assert out == head + HI


async def test_unread_body_drained_then_reused(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody" + GET)
    out = await read_until(client, HI + HI)
    assert out == HI + HI


async def test_large_unread_body_closes(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
    await client.send_all(b"x" * 400_000)
    assert await read_to_eof(client) == HI


async def test_malformed_request_gets_400_and_close(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"] == "downstream_protocol_error"
    assert rec.requests == []
    assert rec.completed[0][1] == 400
    assert rec.stats.cx_protocol_error.value == 1


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
    ],
)
async def test_content_length_with_transfer_encoding_gets_400_and_close(
    nursery: trio.Nursery, framing: bytes
) -> None:
    # RFC 9112 §6.1: the two framings disagree on where the next request starts (here at "G",
    # smuggling "GGET /second"); reject and close rather than pick one.
    rec = Recorder(hello)
    client = await start(nursery, rec)
    await client.send_all(
        b"POST /first HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\n0\r\n\r\nG"
        b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert out.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in out
    assert rec.requests == []
    assert rec.stats.cx_protocol_error.value == 1


CHUNKED_POST = (
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)


async def test_a_flood_of_one_byte_chunks_gets_400_and_close(nursery: trio.Nursery) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    await client.send_all(CHUNKED_POST + b"1\r\nx\r\n" * 20_000 + b"0\r\n\r\n")
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"too many chunks" in out
    assert rec.completed[0][1] == 400


async def test_an_unread_body_of_tiny_chunks_is_not_drained(nursery: trio.Nursery) -> None:
    # Draining to reuse the connection costs a parse per chunk too: 1-byte chunks use up the
    # drain allowance long before its bytes do, and the connection closes instead.
    rec = Recorder(hello)
    client = await start(nursery, rec)
    post = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    await client.send_all(post + b"1\r\nx\r\n" * 20_000 + b"0\r\n\r\n" + GET)
    assert await read_to_eof(client) == HI
    assert len(rec.requests) == 1


async def test_a_chunk_budget_of_zero_turns_the_check_off(nursery: trio.Nursery) -> None:
    rec = Recorder(echo, h1_chunk_budget=0)
    client = await start(nursery, rec)
    await client.send_all(CHUNKED_POST + b"1\r\nx\r\n" * 20_000 + b"0\r\n\r\n")
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n\r\n" + b"x" * 20_000)


async def test_a_chunked_upload_in_kib_chunks_passes_the_chunk_budget(
    nursery: trio.Nursery,
) -> None:
    rec = Recorder(echo)
    client = await start(nursery, rec)
    sizes = [4096, 16384, 8192, 12288]
    wire = bytearray(CHUNKED_POST)
    total = 0
    while total < 4 << 20:
        size = sizes[len(wire) % len(sizes)]
        wire += b"%x\r\n%s\r\n" % (size, b"y" * size)
        total += size
    await client.send_all(bytes(wire) + b"0\r\n\r\n")
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: %d\r\n" % total in out
    assert out.endswith(b"\r\n\r\n" + b"y" * total)


async def test_oversized_head_gets_431(nursery: trio.Nursery) -> None:
    rec = Recorder(hello, max_header_bytes=1024)
    client = await start(nursery, rec)
    await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 2000)
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_too_many_headers_gets_431(nursery: trio.Nursery) -> None:
    rec = Recorder(hello, max_headers=3)
    client = await start(nursery, rec)
    many = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")
    out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in out
    assert rec.requests == []


async def test_slowloris_gets_408(nursery: trio.Nursery, autojump_clock: object) -> None:
    rec = Recorder(hello, header_read_timeout=2.0, idle_timeout=100.0)
    client = await start(nursery, rec)
    await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n")
    with trio.fail_after(50):
        out = await read_to_eof(client)
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"x-meshwire-response-flags: DT" in out
    assert rec.stats.rq_timeout.value == 1


async def test_idle_connection_closed_silently(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    rec = Recorder(hello, idle_timeout=2.0)
    client = await start(nursery, rec)
    await client.send_all(GET)
    assert await read_until(client, b"hi") == HI
    assert await read_to_eof(client) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert rec.stats.cx_active.value == 0


async def test_draining_sets_connection_close(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    draining = trio.Event()
    client = await start(nursery, rec, draining=draining)
    await client.send_all(GET)
    assert await read_until(client, b"hi") == HI
    draining.set()
    assert await read_to_eof(client) == b""  # idle connection closes at once


async def test_draining_closes_after_in_flight_response(nursery: trio.Nursery) -> None:
    draining = trio.Event()

    async def handler(request: Request) -> Response:
        draining.set()
        return await hello(request)

    rec = Recorder(handler)
    client = await start(nursery, rec, draining=draining)
    await client.send_all(GET + GET)
    out = await read_to_eof(client)
    assert out.count(b"HTTP/1.1") == 1
    assert b"connection: close\r\n" in out


async def test_body_error_mid_stream_truncates(nursery: trio.Nursery) -> None:
    body = ChunkBody([b"abc"], fail=UpstreamRemoteReset("upstream reset"))

    async def handler(request: Request) -> Response:
        return Response(200, [(b"content-type", b"text/plain")], body)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET)
    out = await read_to_eof(client)
    assert out.endswith(b"\r\n\r\n3\r\nabc\r\n")  # no terminating 0-chunk
    (req, status, exc) = rec.completed[0]
    assert status == 200
    assert isinstance(exc, UpstreamRemoteReset)
    assert req.info.response_flags == ["UR"]
    assert body.closed


async def test_small_known_length_body_error_truncates(nursery: trio.Nursery) -> None:
    body = ChunkBody([b"abc"], fail=UpstreamRemoteReset())
    body.length = 10

    async def handler(request: Request) -> Response:
        return Response(200, [(b"content-length", b"10")], body)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET)
    out = await read_to_eof(client)
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"


async def test_handler_exception_becomes_500_and_connection_survives(
    nursery: trio.Nursery,
) -> None:
    calls = 0

    async def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await hello(request)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET)
    out = await read_until(client, b"}\n")
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json")
    assert b"boom" not in out
    await client.send_all(GET)
    assert await read_until(client, b"hi") == HI


async def test_response_without_framing_is_chunked(nursery: trio.Nursery) -> None:
    async def handler(request: Request) -> Response:
        return Response(200, [(b"connection", b"keep-alive")], ChunkBody([b"ab", b"c"]))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET)
    out = await read_until(client, b"0\r\n\r\n")
    assert out == (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    )


async def test_known_length_body_coalesced(nursery: trio.Nursery) -> None:
    async def handler(request: Request) -> Response:
        return Response(201, [(b"content-length", b"3")], BytesBody(b"xyz"))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET)
    out = await read_until(client, b"xyz")
    assert out == b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nxyz"


async def test_client_gone_mid_response_is_quiet(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    gate = trio.Event()

    class GatedBody(ChunkBody):
        async def read(self) -> bytes:
            await gate.wait()
            return b"more"

    async def handler(request: Request) -> Response:
        return Response(200, [], GatedBody([]))

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET)
    await read_until(client, b"\r\n\r\n")
    await client.aclose()
    gate.set()
    await until(lambda: bool(rec.completed))
    (req, _, exc) = rec.completed[0]
    assert isinstance(exc, DownstreamDisconnect)
    assert req.info.response_flags == ["DC"]
    await until(lambda: rec.stats.cx_active.value == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_trailers_dropped_without_chunking(nursery: trio.Nursery) -> None:
    async def handler(request: Request) -> Response:
        body = BytesBody(b"abc", trailers=[(b"grpc-status", b"0")])
        return Response(200, [(b"content-length", b"3")], body)

    rec = Recorder(handler)
    client = await start(nursery, rec)
    await client.send_all(GET + GET)
    out = await read_until(client, b"abcHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc")
    assert b"grpc-status" not in out
