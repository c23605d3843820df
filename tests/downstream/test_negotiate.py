"""Protocol choice: ALPN, h2c preface sniffing (whole and byte by byte), disallowed protocols."""

from __future__ import annotations

import h2.errors
import h2.events
import pytest
import trio
import trio.testing
from hyperframe.frame import GoAwayFrame, SettingsFrame

from proxy.downstream.negotiate import PREFACE, serve_connection
from tests.downstream.helpers import (
    H2Client,
    Recorder,
    hello,
    pair,
    parse_frames,
    read_to_eof,
    read_until,
    until,
)

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


async def start(nursery: trio.Nursery, rec: Recorder, **ctx: object) -> trio.abc.Stream:
    client, server = pair()
    nursery.start_soon(serve_connection, server, rec.context(**ctx))
    return client


@pytest.mark.parametrize("bytewise", [False, True])
async def test_h2c_preface_selects_http2(nursery: trio.Nursery, bytewise: bool) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec)
    client = H2Client(stream)
    client.conn.initiate_connection()
    data = client.conn.data_to_send()
    assert data.startswith(PREFACE)
    if bytewise:
        for i in range(len(PREFACE)):
            await stream.send_all(data[i : i + 1])
        await stream.send_all(data[len(PREFACE) :])
    else:
        await stream.send_all(data)
    await client.request(1)
    headers, body, _ = await client.response(1)
    assert (headers[b":status"], body) == (b"200", b"hi")
    assert rec.requests[0].http_version == "2"


@pytest.mark.parametrize("bytewise", [False, True])
async def test_other_bytes_select_http1(nursery: trio.Nursery, bytewise: bool) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec)
    request = b"PRI-not-really / HTTP/1.1\r\nHost: h\r\n\r\n" if bytewise else GET
    if bytewise:
        for i in range(len(request)):
            await stream.send_all(request[i : i + 1])
    else:
        await stream.send_all(request)
    out = await read_until(stream, b"hi")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rec.requests[0].http_version == "1.1"


async def test_alpn_h2_skips_sniffing(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec, tls=True, alpn="h2")
    client = H2Client(stream)
    await client.start()
    await client.request(1)
    assert (await client.response(1))[1] == b"hi"
    assert rec.requests[0].scheme == b"https"


async def test_h2c_refused_on_http1_only_listener(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec, protocols=frozenset({"http1"}))
    await stream.send_all(PREFACE)
    assert await read_to_eof(stream) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert (rec.stats.cx_total.value, rec.stats.cx_active.value) == (1, 0)
    assert rec.stats.cx_protocol_error.value == 1


async def test_http1_refused_on_h2c_only_listener(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec, protocols=frozenset({"h2c"}))
    await stream.send_all(GET)
    assert await read_to_eof(stream) == b""
    assert rec.requests == []


async def test_eof_before_any_byte_and_draining(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec)
    await stream.send_eof()  # type: ignore[attr-defined]
    assert await read_to_eof(stream) == b""
    draining = trio.Event()
    other = await start(nursery, rec, draining=draining)
    await trio.testing.wait_all_tasks_blocked()
    draining.set()
    assert await read_to_eof(other) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert (rec.stats.cx_total.value, rec.stats.cx_active.value) == (2, 0)


@pytest.mark.parametrize(
    ("tls", "alpn", "sent"),
    [(False, None, b"P"), (True, "http/1.1", b""), (True, "http/1.1", b"PRI"), (True, None, b"P")],
)
async def test_a_stalled_start_is_closed_after_header_read_timeout(
    nursery: trio.Nursery, tls: bool, alpn: str | None, sent: bytes
) -> None:
    # The listener saw a first byte (or a TLS handshake): the rest of the preface, or a first
    # request after the handshake, must come within header_read_timeout, not idle_timeout.
    rec = Recorder(hello, header_read_timeout=0.2)
    stream = await start(nursery, rec, tls=tls, alpn=alpn)
    await stream.send_all(sent)
    assert await read_to_eof(stream) == b""
    assert rec.requests == []


async def test_a_stalled_preface_can_be_evicted(nursery: trio.Nursery) -> None:
    rec = Recorder(hello, header_read_timeout=100.0)
    ctx = rec.context()
    client, server = pair()
    nursery.start_soon(serve_connection, server, ctx)
    await client.send_all(b"P")
    await until(lambda: len(ctx.idle) == 1)  # at max_connections, a candidate to close
    assert ctx.idle.evict()
    assert await read_to_eof(client) == b""
    await until(lambda: rec.stats.cx_active.value == 0)


async def test_h2_connection_events_reach_client(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec)
    client = H2Client(stream)
    await client.start()
    settings = await client.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    assert isinstance(settings, h2.events.RemoteSettingsChanged)
    assert (
        settings.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 100
    )


@pytest.mark.parametrize(
    "sent",
    [
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",  # differs after the request line
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r",  # differs in the last byte
        b"PRI * HTTP/2.0 \r\n\r\n",  # differs right after the method, target and version
    ],
)
async def test_invalid_h2_preface_gets_goaway_protocol_error(
    nursery: trio.Nursery, sent: bytes
) -> None:
    rec = Recorder(hello)
    stream = await start(nursery, rec)
    await stream.send_all(sent)
    frames = parse_frames(await read_to_eof(stream))
    assert [type(f) for f in frames] == [SettingsFrame, GoAwayFrame]  # RFC 9113 §3.4
    goaway = frames[1]
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.error_code, goaway.last_stream_id) == (h2.errors.ErrorCodes.PROTOCOL_ERROR, 0)
    assert rec.stats.cx_protocol_error.value == 1
    assert rec.requests == []
