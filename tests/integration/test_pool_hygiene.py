"""Upstream HTTP/1.1 bytes no response owns, or framed two ways: never reach another client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from tests.integration.harness import meshwire, one_route_config, raw_backend

DEADLINE = 20  # generous bound on waits; tests never assert elapsed time

SMUGGLED = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 8\r\n\r\nPOISONED"


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Upstream:
    """A raw HTTP/1.1 backend: `script` maps a target to the exact bytes sent in one write, other
    targets get their own path as the body. Counts connections opened and closed."""

    def __init__(self, script: dict[bytes, bytes]) -> None:
        self.script = script
        self.opened = 0
        self.closed = 0
        self.late = trio.Event()  # set by the test: send `late_bytes` on the idle connection
        self.late_bytes = b""
        self.late_sent = trio.Event()
        self.changed = trio.Event()

    def _bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(DEADLINE):
            while not predicate():
                await self.changed.wait()

    async def serve(self, stream: trio.SocketStream) -> None:
        self.opened += 1
        self._bump()
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                target = head.split(b" ", 2)[1]
                await stream.send_all(self.script.get(target, ok(target)))
                if target == b"/late":
                    await self.late.wait()
                    await stream.send_all(self.late_bytes)
                    self.late_sent.set()
        except trio.BrokenResourceError:
            pass
        finally:
            self.closed += 1
            self._bump()


async def get(port: int, target: bytes, method: bytes = b"GET") -> bytes:
    """One request on a new downstream connection; the whole answer up to the proxy's close."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (method, target)
        )
        data = b""
        with trio.fail_after(DEADLINE):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


def body_of(answer: bytes) -> bytes:
    assert answer.startswith(b"HTTP/1.1 "), answer
    return answer.split(b"\r\n\r\n", 1)[1]


async def clients_after(
    first: bytes,
    method: bytes,
    expected_first: bytes,
    script: dict[bytes, bytes],
    between: Callable[[Upstream], Awaitable[None]] | None = None,
) -> Upstream:
    """Client A asks `first`; then B and C, each on its own connection, must get their own."""
    upstream = Upstream(script)
    async with raw_backend(upstream.serve) as port, meshwire(one_route_config(0, port)) as mw:
        a = await get(mw.port(), first, method)
        assert body_of(a) == expected_first, a
        if between is not None:
            await between(upstream)
        b = await get(mw.port(), b"/user0")
        assert body_of(b) == b"/user0", b
        assert b"attacker" not in b
        c = await get(mw.port(), b"/user1")
        assert body_of(c) == b"/user1", c
        # The dirty connection was closed and B's request went out on a new one.
        await upstream.wait_for(lambda: upstream.closed >= 1)
        assert upstream.opened == 2
    return upstream


async def test_bytes_after_the_declared_length_are_not_the_next_clients_response() -> None:
    await clients_after(b"/extra", b"GET", b"ok", {b"/extra": ok(b"ok") + SMUGGLED})


async def test_a_response_sent_late_on_an_idle_connection_reaches_no_one() -> None:
    async def send_late(upstream: Upstream) -> None:
        upstream.late_bytes = SMUGGLED
        upstream.late.set()
        # Loopback delivers a write into the peer's receive queue before send() returns.
        with trio.fail_after(DEADLINE):
            await upstream.late_sent.wait()

    await clients_after(b"/late", b"GET", b"ok", {b"/late": ok(b"ok")}, send_late)


async def test_a_204_with_a_body_does_not_leak_the_body() -> None:
    no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    await clients_after(b"/nothing", b"GET", b"", {b"/nothing": no_content + SMUGGLED})


async def test_a_head_response_with_a_body_does_not_leak_the_body() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    await clients_after(b"/head", b"HEAD", b"", {b"/head": head + SMUGGLED})


async def test_a_response_with_content_length_and_chunked_is_dechunked_and_not_pooled() -> None:
    # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a proxy forwarding such a
    # message must drop the Content-Length, and the connection cannot be trusted afterwards.
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream = Upstream({b"/both": both + b"5\r\nhello\r\n0\r\n\r\n"})
    async with raw_backend(upstream.serve) as port, meshwire(one_route_config(0, port)) as mw:
        a = await get(mw.port(), b"/both")
        head, body = a.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), a
        assert b"content-length" not in head.lower(), a
        assert b"transfer-encoding: chunked" in head.lower(), a
        assert body == b"5\r\nhello\r\n0\r\n\r\n"
        assert body_of(await get(mw.port(), b"/user0")) == b"/user0"
        await upstream.wait_for(lambda: upstream.closed >= 1)
        assert upstream.opened == 2
