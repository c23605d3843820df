"""Fuzz the HTTP/2 upstream side through the real proxy: an h2c upstream answers concurrent
requests with valid and broken responses and hostile frames. No crash or hang, and no client
gets a marker of another's response (issue 12's fuzz invariants, the upstream direction)."""

from __future__ import annotations

import re
import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.downstream.helpers import raw_frame
from tests.fuzz.invariants import HANG_DEADLINE, bounded_memory, no_errors_logged
from tests.integration.harness import H1Client, meshwire, one_route_config, raw_backend

ROUTE_TIMEOUT = 0.5


def body_for(index: int) -> bytes:
    return b"<%d>" % index * 6


HOSTILE = [
    "data-after-end", "headers-after-end", "rst", "window-overflow", "unknown", "ping", "goaway",
    "bad-settings", "push", "continuation", "trailers-pseudo",
]  # fmt: skip


@st.composite
def plan(draw: st.DrawFn) -> dict[str, object]:
    """How the upstream answers one request: its status and headers, whether the body is sent
    and ended, and the hostile frames that follow (on its stream, or on the connection)."""
    return {
        "status": draw(st.sampled_from([b"200", b"200", b"204", b"abc", b"", b"099"])),
        "headers": draw(
            st.lists(
                st.sampled_from(
                    [
                        (b"content-length", b"3"),
                        (b"content-length", b"18"),
                        (b"connection", b"close"),
                        (b":path", b"/x"),
                        (b"transfer-encoding", b"chunked"),
                        (b"x-a", b"b"),
                    ]
                ),
                max_size=2,
            )
        ),
        "body": draw(st.sampled_from(["whole", "whole", "none", "unended"])),
        "hostile": draw(st.lists(st.sampled_from(HOSTILE), max_size=2)),
    }


def hostile(kind: str, sid: int, conn: h2.connection.H2Connection) -> bytes:
    if kind == "data-after-end":
        return raw_frame(0x0, sid, b"<P><P>", 0x1)
    if kind == "headers-after-end":
        return raw_frame(0x1, sid, b"\x88", 0x5)  # :status 200, indexed
    if kind == "rst":
        return raw_frame(0x3, sid, b"\x00\x00\x00\x02")
    if kind == "window-overflow":
        return raw_frame(0x8, 0, b"\x7f\xff\xff\xff") * 2
    if kind == "unknown":
        return raw_frame(0xFA, sid, b"<P>")
    if kind == "ping":
        return raw_frame(0x6, 0, b"\x00" * 8)
    if kind == "goaway":
        return raw_frame(0x7, 0, struct.pack(">II", max(sid - 2, 0), 0))
    if kind == "bad-settings":
        return raw_frame(0x4, 0, b"\x00\x04\xff\xff\xff\xff")  # window above 2^31-1
    if kind == "push":
        return raw_frame(0x5, sid, b"\x00\x00\x00\x02\x88", 0x4)
    if kind == "continuation":
        return raw_frame(0x9, sid, b"\x88", 0x4)
    conn.send_headers(sid, [(b":status", b"200")], end_stream=True)  # trailers with a pseudo
    return b""


def upstream(plans: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    async def behave(stream: trio.SocketStream) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False,
        )  # fmt: skip
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return
            out = conn.data_to_send()
            for event in events:
                if not isinstance(event, h2.events.RequestReceived):
                    continue
                sid = event.stream_id
                path = dict(event.headers or []).get(b":path", b"")
                index = int(path[2:]) if re.fullmatch(rb"/r\d+", path) else 0
                p = plans[index % len(plans)]
                headers = [(b":status", p["status"]), *p["headers"]]  # type: ignore[misc]
                try:
                    conn.send_headers(sid, headers, end_stream=p["body"] == "none")
                    if p["body"] != "none":
                        conn.send_data(sid, body_for(index), end_stream=p["body"] == "whole")
                    out += conn.data_to_send()
                    for kind in p["hostile"]:  # type: ignore[attr-defined]
                        out += hostile(kind, sid, conn) + conn.data_to_send()
                except h2.exceptions.H2Error:
                    out += conn.data_to_send()
            try:
                await stream.send_all(out)
            except trio.BrokenResourceError:
                return

    return behave


async def exchange(plans: list[dict[str, object]]) -> None:
    config = one_route_config(0, 0, upstream_protocol="h2c", timeout=ROUTE_TIMEOUT)

    async def ask(port: int, index: int) -> None:
        async with H1Client.connect(port) as client:
            try:
                reply = await client.request("GET", f"/r{index}")
            except h11.RemoteProtocolError:
                return  # the proxy cut a broken upstream body short: fine
        if reply.header(b"x-meshwire-response-flags") is not None:
            assert reply.status >= 400, reply
            return
        markers = set(re.findall(rb"<([0-9P]+)>", reply.body))
        assert markers <= {b"%d" % index}, (index, reply.status, reply.body)

    with trio.fail_after(HANG_DEADLINE):
        async with raw_backend(upstream(plans)) as port:
            config.clusters[0].endpoints[0] = f"127.0.0.1:{port}"
            async with meshwire(config) as mw, trio.open_nursery() as nursery:
                for index in range(len(plans)):
                    nursery.start_soon(ask, mw.port(), index)


@given(st.lists(plan(), min_size=2, max_size=4))
def test_concurrent_requests_over_a_hostile_h2_upstream(plans: list[dict[str, object]]) -> None:
    with no_errors_logged(), bounded_memory():
        trio.run(exchange, plans)
