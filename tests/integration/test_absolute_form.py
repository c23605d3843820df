"""Absolute-form request targets (RFC 9112 §3.2.2) are routed and forwarded in origin-form."""

from __future__ import annotations

import msgspec
import pytest
import trio

from config import schema
from proxy.http.target import split_absolute
from tests.integration.harness import meshwire, one_route_config, raw_backend

DEADLINE = 20  # generous bound on waits; tests never assert elapsed time


async def read_head(stream: trio.abc.Stream) -> bytes:
    data = b""
    with trio.fail_after(DEADLINE):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


def host_routed(listen: int, upstream: int) -> schema.Config:
    """Only path /path on host example.com reaches the backend; anything else is 404."""
    config = one_route_config(listen, upstream)
    (listener,) = config.listeners
    match = schema.RouteMatch(
        prefix="/path", headers=[schema.HeaderMatch(name="host", exact="example.com")]
    )
    route = msgspec.structs.replace(listener.routes[0], match=match)
    listener = msgspec.structs.replace(listener, routes=[route])
    return msgspec.structs.replace(config, listeners=[listener])


async def test_absolute_form_is_routed_and_sent_upstream_in_origin_form() -> None:
    heads: list[bytes] = []

    async def answer(stream: trio.SocketStream) -> None:
        heads.append(await read_head(stream))
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with raw_backend(answer) as port, meshwire(host_routed(0, port)) as mw:
        stream = await trio.open_tcp_stream("127.0.0.1", mw.port())
        async with stream:
            await stream.send_all(
                b"GET http://example.com/path?q HTTP/1.1\r\nHost: wrong.example\r\n\r\n"
            )
            answer_head = await read_head(stream)
    assert answer_head.startswith(b"HTTP/1.1 200 "), answer_head
    (head,) = heads
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /path?q HTTP/1.1"
    hosts = [line for line in lines if line.lower().startswith(b"host:")]
    assert [h.split(b":", 1)[1].strip() for h in hosts] == [b"example.com"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://example.com/path?q", (b"/path?q", b"example.com")),
        (b"HTTPS://user:pw@example.com:8443", (b"/", b"example.com:8443")),
        (b"http://example.com?q=/x", (b"/?q=/x", b"example.com")),
        (b"http://[::1]:80/a#frag", (b"/a", b"[::1]:80")),
        (b"/origin-form", None),
        (b"*", None),
        (b"example.com:443", None),  # authority-form (CONNECT)
        (b"ftp://example.com/x", None),
        (b"http:///no-host", None),
    ],
)
def test_split_absolute(target: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert split_absolute(target) == expected
