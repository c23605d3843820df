"""Fuzz the HTTP/1.1 upstream side with hostile responses through the real proxy and its pool:
no crash or hang, and no client ever gets bytes meant for another (finding 1 of issue 12)."""

from __future__ import annotations

import re

import h11
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.invariants import HANG_DEADLINE, bounded_memory, no_errors_logged
from tests.integration.harness import H1Client, meshwire, one_route_config, raw_backend

ROUTE_TIMEOUT = 0.5  # a response that never completes ends as 504 quickly


def body_for(index: int) -> bytes:
    return b"<%d>" % index * 6


@st.composite
def response(draw: st.DrawFn, index: int) -> tuple[bytes, bool]:
    """Response bytes for request `index`, and whether the backend closes after sending them."""
    body = body_for(index)
    status = draw(st.sampled_from([b"200 OK", b"204 No Content", b"304 Not Modified", b"200"]))
    # The framings that once let bytes reach another client come up more often.
    framing = draw(
        st.sampled_from(
            ["length", "chunked", "close", "short", "long", "both", "dup", "bad-chunk"]
            + ["extra", "both", "short"] * 2
        )
    )
    head = b"HTTP/1.1 " + status + b"\r\n"
    interim = draw(st.sampled_from([b"", b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))
    closes = False
    if framing == "length":
        payload, head = body, head + b"content-length: %d\r\n" % len(body)
    elif framing == "chunked":
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        head += b"transfer-encoding: chunked\r\n"
    elif framing == "close":
        payload, closes = body, True
        head += b"connection: close\r\n"
    elif framing == "short":
        payload, head = body, head + b"content-length: %d\r\n" % (len(body) - 3)
    elif framing == "long":
        payload, head = body, head + b"content-length: %d\r\n" % (len(body) + 3)
    elif framing == "both":
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        head += b"content-length: 2\r\ntransfer-encoding: chunked\r\n"
    elif framing == "dup":
        payload, head = body, head + b"content-length: 2\r\ncontent-length: 3\r\n"
    elif framing == "bad-chunk":
        payload, head = b"zz\r\n" + body, head + b"transfer-encoding: chunked\r\n"
    else:
        poison = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n<P><P><P>"
        payload, head = body + poison, head + b"content-length: %d\r\n" % len(body)
    extra = draw(st.sampled_from([b"", b"", b"\r\n", b"garbage", b"HTTP/1.1 200 OK\r\n\r\n"]))
    return interim + head + b"\r\n" + payload + extra, closes


def make_backend(responses: dict[bytes, tuple[bytes, bool]]):  # type: ignore[no-untyped-def]
    """Answers each request for /rN with the generated response N, on any connection."""

    async def behave(stream: trio.SocketStream) -> None:
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return
                pending += chunk
            head, pending = pending.split(b"\r\n\r\n", 1)
            target = head.split(b" ")[1] if head.count(b" ") >= 2 else b""
            data, closes = responses.get(target, (b"HTTP/1.1 404 Not Found\r\n\r\n", True))
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                return
            if closes:
                return

    return behave


def assert_own(index: int, status: int, body: bytes, flags: bytes | None) -> None:
    """A client's answer is its own response (possibly cut short, or with what a close-delimited
    body ran on with), or one the proxy made: never a marker of another response."""
    if flags is not None:
        assert status >= 400, (index, status, flags)
        return
    markers = set(re.findall(rb"<([0-9P]+)>", body))
    assert markers <= {b"%d" % index}, (index, status, body)


async def exchange(responses: list[tuple[bytes, bool]]) -> None:
    table = {b"/r%d" % i: r for i, r in enumerate(responses)}
    config = one_route_config(0, 0, timeout=ROUTE_TIMEOUT)
    with trio.fail_after(HANG_DEADLINE):
        async with raw_backend(make_backend(table)) as port:
            config.clusters[0].endpoints[0] = f"127.0.0.1:{port}"
            async with meshwire(config) as mw:
                for i in range(len(responses)):
                    async with H1Client.connect(mw.port()) as client:
                        try:
                            reply = await client.request("GET", f"/r{i}")
                        except h11.RemoteProtocolError:
                            continue  # the proxy cut a broken upstream body short: fine
                        flags = reply.header(b"x-meshwire-response-flags")
                        assert_own(i, reply.status, reply.body, flags)


@given(st.data(), st.integers(2, 4))
def test_hostile_responses_never_reach_another_client(data: st.DataObject, count: int) -> None:
    responses = [data.draw(response(i)) for i in range(count)]
    with no_errors_logged(), bounded_memory():
        trio.run(exchange, responses)
