"""The byte corpus through real sockets, once per codec: meshwire's server reads each request
as its case says (or refuses it with the case's status), and its upstream client makes of
each response what its case says."""

from __future__ import annotations

import re
from functools import partial

import pytest
import trio

from config.schema import Cluster
from proxy.downstream.h1 import serve_h1
from proxy.http.errors import ProxyError
from proxy.http.model import BytesBody, EmptyBody, Request, Response
from proxy.http1.codec import Codec, choose
from proxy.stats import Stats
from proxy.upstream.manager import ClusterManager
from tests.downstream.helpers import Recorder
from tests.http1.corpus import REQUESTS, RESPONSES, Parsed, RequestCase, ResponseCase

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.fixture(params=["h11", "httptools"])
def codec(request: pytest.FixtureRequest) -> Codec:
    return choose(request.param)


async def _read_to_eof(stream: trio.abc.Stream) -> bytes:
    out = bytearray()
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            out += chunk
    return bytes(out)


async def serve_bytes(codec: Codec, wire: bytes) -> tuple[bytes, list[Parsed], Recorder]:
    """Send `wire` then EOF to a meshwire HTTP/1.1 server on a TCP socket; what it answered
    and the requests its handler read in full."""
    seen: list[Parsed] = []

    async def handler(request: Request) -> Response:
        body = b""
        while chunk := await request.body.read():
            body += chunk
        parsed = Parsed(request.method, request.target, request.headers, body)
        seen.append(
            Parsed(parsed.method, parsed.target, parsed.headers, body, request.body.trailers)
        )
        return Response(200, [(b"content-length", b"2")], BytesBody(b"ok"))

    rec = Recorder(handler)

    async def serve(stream: trio.SocketStream) -> None:
        await serve_h1(stream, rec.context(codec=codec))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await client.send_all(wire)
            await client.send_eof()
        except trio.BrokenResourceError:
            pass  # refused and closed before it read everything: read what it wrote
        out = await _read_to_eof(client)
        await client.aclose()
        nursery.cancel_scope.cancel()
    return out, seen, rec


@pytest.mark.parametrize("case", REQUESTS, ids=[c.name for c in REQUESTS])
async def test_request_corpus(codec: Codec, case: RequestCase) -> None:
    out, seen, rec = await serve_bytes(codec, case.wire)
    statuses = [int(s) for s in STATUS_LINE.findall(out)]
    status = case.h11_status if codec.name == "h11" and case.h11_status else case.status
    expected = [200] * len(case.requests) + ([status] if status else [])
    assert statuses == expected, out
    if case.handled:
        assert len(rec.requests) == len(case.requests) + 1
    else:
        assert seen == case.requests
    if case.status:
        assert out.endswith(b"}\n"), out  # the rendered error, then the connection closed
        assert b"connection: close\r\n" in out.lower()


class RawUpstream:
    """Answers the first request of every connection with given bytes, later ones with 200."""

    def __init__(self, wire: bytes, close: bool) -> None:
        self.wire = wire
        self.close = close
        self.connections = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        first = True
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                buf = buf.split(b"\r\n\r\n", 1)[1]
                if first:
                    await stream.send_all(self.wire)
                    if self.close:
                        return
                    first = False
                else:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


async def _body(response: Response) -> bytes:
    out = b""
    with trio.fail_after(5):
        while chunk := await response.body.read():
            out += chunk
    return out


@pytest.mark.parametrize("case", RESPONSES, ids=[c.name for c in RESPONSES])
async def test_response_corpus(codec: Codec, case: ResponseCase) -> None:
    upstream = RawUpstream(case.wire, close=case.name == "until close")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, upstream.serve, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        config = Cluster(name="backend", endpoints=[f"127.0.0.1:{port}"])
        async with ClusterManager([config], Stats(), codec=codec) as manager:
            cluster = manager.get("backend")
            assert cluster is not None
            ask = Request(case.method, b"/", [], EmptyBody(), authority=b"up")
            if case.status == 502:
                with pytest.raises(ProxyError) as caught:
                    await cluster.send(ask)
                assert caught.value.status == 502
            else:
                response = await cluster.send(ask)
                assert response.status == case.status
                assert await _body(response) == case.body
                assert response.body.trailers == case.trailers
                for field in case.headers:
                    assert field in response.headers
                names = {name for name, _ in response.headers}
                assert not names & set(case.absent), response.headers
                again = await cluster.send(Request(b"GET", b"/", [], EmptyBody(), authority=b"up"))
                await _body(again)
                assert upstream.connections == (1 if case.reused else 2)
        nursery.cancel_scope.cancel()
