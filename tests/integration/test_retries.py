"""The retry filter over real sockets: failing upstreams, bodies, budgets and hang-ups."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import h11
import msgspec
import trio

from config import schema
from proxy.http.model import Request, Response, header_get
from tests.integration.harness import H1Client, Running, backend, meshwire, one_route_config


def free_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused (UF)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def retry_config(
    endpoints: list[int], *, access_log: Path | None = None, **retry: object
) -> schema.Config:
    base = one_route_config(0, endpoints[0], access_log=str(access_log) if access_log else None)
    fields = {"type": "retry", **retry}
    retry_filter = msgspec.convert(
        fields, schema.RetryFilter, dec_hook=lambda cls, v: schema.Duration.parse(v)
    )
    listener = msgspec.structs.replace(
        base.listeners[0], filters=[retry_filter, schema.RouterFilter()]
    )
    cluster = msgspec.structs.replace(
        base.clusters[0], endpoints=[f"127.0.0.1:{port}" for port in endpoints]
    )
    return msgspec.structs.replace(base, listeners=[listener], clusters=[cluster])


class Script:
    """A backend handler answering with `statuses` in turn (the last one repeats), recording
    each attempt's path, headers and body."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.attempts: list[tuple[bytes, list[tuple[bytes, bytes]], bytes]] = []
        self.changed = trio.Event()

    async def __call__(self, request: Request, /) -> Response:
        body = b""
        while chunk := await request.body.read():
            body += chunk
        self.attempts.append((request.path, list(request.headers), body))
        self.changed.set()
        self.changed = trio.Event()
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return Response.text(status, f"attempt {len(self.attempts)}\n")

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.attempts) < count:
                await self.changed.wait()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll `condition` until it holds; fail after a deadline."""
    with trio.fail_after(10):
        while True:  # a stats gauge has no event to wait on
            if condition():
                return
            await trio.sleep(0.01)


async def get(mw: Running, target: str = "/", headers: list[tuple[str, str]] | None = None) -> int:
    async with H1Client.connect(mw.port()) as client:
        return (await client.request("GET", target, headers)).status


async def test_upstream_failing_twice_then_succeeding() -> None:
    script = Script(503, 503, 200)
    async with backend(script) as port:
        config = retry_config([port], retry_on=["5xx"], num_retries=3, include_attempt_count=True)
        async with meshwire(config) as mw:
            assert await get(mw) == 200
            # The App's own counters, so the admin port shows them.
            assert mw.stat("http.retry.retry.upstream_rq_retry") == 2
            assert mw.stat("http.retry.retry.upstream_rq_retry_success") == 1
    assert len(script.attempts) == 3
    counts = [header_get(headers, b"x-envoy-attempt-count") for _, headers, _ in script.attempts]
    assert counts == [b"1", b"2", b"3"]


async def test_503_is_retried_with_5xx_and_not_without_it() -> None:
    with_5xx = Script(503, 200)
    without = Script(503, 200)
    async with backend(with_5xx) as port_a, backend(without) as port_b:
        async with meshwire(retry_config([port_a], retry_on=["5xx"])) as mw:
            assert await get(mw) == 200
        async with meshwire(retry_config([port_b])) as mw:  # connect-failure, refused-stream
            assert await get(mw) == 503
    assert len(with_5xx.attempts) == 2
    assert len(without.attempts) == 1


async def test_retriable_status_codes() -> None:
    script = Script(429, 503, 200)
    async with backend(script) as port:
        config = retry_config(
            [port], retry_on=["retriable-status-codes"], retriable_status_codes=[429], num_retries=3
        )
        async with meshwire(config) as mw:
            assert await get(mw) == 503  # 429 retried, 503 not listed
    assert len(script.attempts) == 2


async def test_max_retries_header_when_respected() -> None:
    script = Script(503, 503, 200)
    async with backend(script) as port:
        config = retry_config([port], retry_on=["5xx"], num_retries=0, respect_request_headers=True)
        async with meshwire(config) as mw:
            assert await get(mw, headers=[("x-envoy-max-retries", "2")]) == 200
    assert len(script.attempts) == 3
    assert all(header_get(h, b"x-envoy-max-retries") is None for _, h, _ in script.attempts)


async def test_connect_failure_is_retried_on_the_next_endpoint() -> None:
    script = Script(200)
    async with backend(script) as alive:
        async with meshwire(retry_config([free_port(), alive])) as mw:
            statuses = [await get(mw) for _ in range(4)]
            failed = mw.stat("cluster.backend.upstream_cx_connect_fail")
    assert statuses == [200] * 4
    assert failed >= 1  # round robin sent at least one first attempt to the dead endpoint
    assert len(script.attempts) == 4


async def test_per_try_timeout_retries_a_hung_attempt() -> None:
    release = trio.Event()
    script = Script(200)

    async def first_hangs(request: Request, /) -> Response:
        if not script.attempts:
            script.attempts.append((request.path, [], b""))
            await release.wait()
        return await script(request)

    try:
        async with backend(first_hangs) as port:
            config = retry_config([port], retry_on=["gateway-error"], per_try_timeout="200ms")
            async with meshwire(config) as mw:
                with trio.fail_after(10):
                    assert await get(mw) == 200
            config = retry_config([port], retry_on=["connect-failure"], per_try_timeout="200ms")
            script.attempts.clear()
            async with meshwire(config) as mw, H1Client.connect(mw.port()) as client:
                with trio.fail_after(10):
                    reply = await client.request("GET", "/")
    finally:
        release.set()
    assert reply.status == 504
    assert reply.header(b"x-meshwire-response-flags") == b"UT"
    assert json.loads(reply.body)["error"] == "upstream_per_try_timeout"


async def post_chunked(port: int, chunks: list[bytes]) -> int:
    """POST a chunked (unknown-length) body; the response status."""
    conn = h11.Connection(h11.CLIENT)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        head = [("host", "test"), ("transfer-encoding", "chunked")]
        await stream.send_all(conn.send(h11.Request(method="POST", target="/up", headers=head)))
        for chunk in chunks:
            await stream.send_all(conn.send(h11.Data(data=chunk)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                return event.status_code


async def test_large_streamed_body_is_not_retried_but_a_small_one_is_replayed() -> None:
    streamed = Script(503, 200)
    small = Script(503, 200)
    chunks = [bytes([i]) * 16384 for i in range(16)]  # 256 KiB, no declared length
    payload = bytes(range(256)) * 40
    async with backend(streamed) as port_a, backend(small) as port_b:
        async with meshwire(retry_config([port_a], retry_on=["5xx"], num_retries=2)) as mw:
            assert await post_chunked(mw.port(), chunks) == 503
        async with meshwire(retry_config([port_b], retry_on=["5xx"])) as mw:
            async with H1Client.connect(mw.port()) as client:
                assert (await client.request("POST", "/up", body=payload)).status == 200
    assert [body for _, _, body in streamed.attempts] == [b"".join(chunks)]
    assert [body for _, _, body in small.attempts] == [payload, payload]


async def test_exhausted_retries_log_urx(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    script = Script(503)
    async with backend(script) as port:
        config = retry_config([port], access_log=log, retry_on=["5xx"], num_retries=2)
        async with meshwire(config) as mw:
            assert await get(mw) == 503
        dead = retry_config([free_port()], access_log=log)
        async with meshwire(dead) as mw, H1Client.connect(mw.port()) as client:
            reply = await client.request("GET", "/")
    assert len(script.attempts) == 3
    assert reply.status == 503
    assert reply.header(b"x-meshwire-response-flags") == b"UF"  # the last error, its own flag
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["response_flags"] for e in entries] == ["URX", "URX,UF"]


async def test_budget_overflow_skips_retries() -> None:
    release = trio.Event()
    retrying = trio.Event()
    failing = Script(503)
    calls: list[bytes] = []

    async def handler(request: Request, /) -> Response:
        calls.append(request.path)
        if request.path == b"/b":
            return await failing(request)
        if calls.count(b"/a") == 1:
            return Response.text(503, "first\n")
        retrying.set()
        await release.wait()
        return Response.text(200, "second\n")

    budget = {"budget_percent": 0, "min_retry_concurrency": 1}
    async with backend(handler) as port:
        config = retry_config([port], retry_on=["5xx"], num_retries=3, retry_budget=budget)
        async with meshwire(config) as mw, trio.open_nursery() as nursery:
            statuses: list[int] = []

            async def first() -> None:
                statuses.append(await get(mw, "/a"))

            nursery.start_soon(first)
            with trio.fail_after(10):
                await retrying.wait()  # /a's retry holds the only slot
                assert await get(mw, "/b") == 503
            release.set()
    assert statuses == [200]
    assert len(failing.attempts) == 1


async def test_client_hanging_up_during_backoff_stops_the_retries() -> None:
    script = Script(503)
    async with backend(script) as port:
        config = retry_config(
            [port], retry_on=["5xx"], num_retries=3, base_interval="20s", max_interval="60s"
        )
        async with meshwire(config) as mw:
            active = "http.ingress.downstream_rq_active"
            stream = await trio.open_tcp_stream("127.0.0.1", mw.port())
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method="GET", target="/", headers=[("host", "test")])
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            await script.wait_for(1)
            await wait_until(lambda: mw.stat(active) == 1)
            await stream.aclose()
            # Back-offs of up to a minute remain: only a cancelled sleep ends the request now.
            await wait_until(lambda: mw.stat(active) == 0)
    assert len(script.attempts) <= 2
