"""Cheap exhaustion (issue 12): silent connections, one client's many, stalled request bodies."""

from __future__ import annotations

import msgspec
import trio

from config import schema
from proxy.http.model import BytesBody, Request, Response, read_all
from tests.integration.harness import H1Client, backend, meshwire, one_route_config

DEADLINE = 20  # generous bound on waits; tests never assert elapsed time


async def ok(request: Request) -> Response:
    await read_all(request.body, 1 << 20)
    return Response(200, [(b"content-length", b"2")], BytesBody(b"ok"))


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    data = b""
    with trio.fail_after(DEADLINE):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return data
            if not chunk:
                return data
            data += chunk


def with_max_requests(config: schema.Config, max_requests: int) -> schema.Config:
    clusters = [msgspec.structs.replace(c, max_requests=max_requests) for c in config.clusters]
    return msgspec.structs.replace(config, clusters=clusters)


async def test_a_stalled_body_gets_408_and_frees_its_cluster_slot() -> None:
    limits = schema.Limits(body_idle_timeout=schema.Duration(0.2))
    async with backend(ok) as port:
        config = with_max_requests(one_route_config(0, port, limits=limits), 1)
        async with meshwire(config) as mw:
            slow = await trio.open_tcp_stream("127.0.0.1", mw.port())
            async with slow:
                head = b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n"
                await slow.send_all(head + b"x")  # one byte, then silence: holds the only slot
                answer = await read_until_eof(slow)
            assert answer.startswith(b"HTTP/1.1 408 ")
            async with H1Client.connect(mw.port()) as client:
                assert (await client.request("GET", "/")).status == 200
            assert mw.stat("cluster.backend.upstream_rq_pending_overflow") == 0
