"""Floods of frames that do no work (PRIORITY, WINDOW_UPDATE, unknown types) end in GOAWAY."""

from __future__ import annotations

import h2.errors
import h2.events
import pytest
import trio
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from proxy.downstream.h2 import serve_h2
from proxy.http.model import Request, Response
from tests.downstream.helpers import (
    H2Client,
    Recorder,
    hello,
    pair,
    parse_frames,
    raw_frame,
    until,
)
from tests.downstream.test_h1 import ChunkBody

FLOOD = 5000  # far beyond every default budget on a connection with one stream


FLOODS = {
    "priority": raw_frame(0x2, 3, b"\x00\x00\x00\x00\x0f"),  # PRIORITY for an idle stream
    "window-update-connection": raw_frame(0x8, 0, b"\x00\x00\x00\x01"),
    "window-update-closed-stream": raw_frame(0x8, 1, b"\x00\x00\x00\x01"),  # h2 emits no event
    "unknown-type": raw_frame(0xFA, 0, b""),
    "rst-stream-closed-stream": raw_frame(0x3, 1, b"\x00\x00\x00\x08"),  # no event, no reset
    "altsvc": raw_frame(0xA, 0, b"\x00\x00"),  # a server ignores ALTSVC: no event either
}


async def start(nursery: trio.Nursery, rec: Recorder) -> H2Client:
    client_stream, server_stream = pair()
    nursery.start_soon(serve_h2, server_stream, rec.context())
    client = H2Client(client_stream)
    await client.start()
    return client


async def read_frames_to_eof(client: H2Client) -> list[object]:
    data = b""
    with trio.fail_after(5):
        while chunk := await client.stream.receive_some(65536):
            data += chunk
    return list(parse_frames(data))


@pytest.mark.parametrize("kind", sorted(FLOODS))
async def test_flood_gets_enhance_your_calm_and_others_are_served(
    nursery: trio.Nursery, kind: str
) -> None:
    rec = Recorder(hello)
    bystander = await start(nursery, rec)
    flooder = await start(nursery, rec)
    await flooder.request(1)
    assert (await flooder.response(1))[1] == b"hi"
    # The flood, then a request in the same write: served only if the server read every frame.
    flooder.conn.send_headers(
        3,
        [(b":method", b"GET"), (b":path", b"/after"), (b":scheme", b"http"), (b":authority", b"h")],
    )
    await flooder.stream.send_all(FLOODS[kind] * FLOOD + flooder.conn.data_to_send())
    frames = await read_frames_to_eof(flooder)
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [(g.error_code, g.last_stream_id) for g in goaways] == [
        (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, 1)
    ]
    assert [r.target for r in rec.requests] == [b"/"]  # the server stopped inside the flood
    assert rec.stats.cx_protocol_error.value == 1
    await bystander.request(1)
    assert (await bystander.response(1))[1] == b"hi"


async def test_grpc_like_client_updating_windows_for_real_data_is_not_cut(
    nursery: trio.Nursery,
) -> None:
    async def stream_out(request: Request) -> Response:
        return Response(
            200, [(b"content-type", b"application/grpc")], ChunkBody([b"m" * 100] * 300)
        )

    rec = Recorder(stream_out)
    client = await start(nursery, rec)
    # Every DATA answered at once with a stream and a connection WINDOW_UPDATE, and a PRIORITY
    # now and then: far more eager than grpc, curl or a browser.
    await client.stream.send_all(FLOODS["priority"] * 50)
    for sid in (1, 3, 5):
        await client.request(sid)
        received = 0
        while received < 300 * 100:
            assert not client.eof, client.events
            with trio.fail_after(5):
                await client.pump()
            for event in client.events:
                if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                    received += len(event.data)
                    update = event.flow_controlled_length.to_bytes(4, "big")
                    await client.stream.send_all(
                        raw_frame(0x8, sid, update) + raw_frame(0x8, 0, update)
                    )
            client.events.clear()
    assert client.eof is False
    assert rec.stats.cx_protocol_error.value == 0
    assert len(rec.completed) == 3


ACK = 0x1


@pytest.mark.parametrize(
    "ack",
    [raw_frame(0x6, 0, b"12345678", ACK), raw_frame(0x4, 0, b"", ACK)],
    ids=["ping-ack", "settings-ack"],  # we sent no PING, and one SETTINGS
)
async def test_unsolicited_ack_flood_gets_enhance_your_calm(
    nursery: trio.Nursery, ack: bytes
) -> None:
    rec = Recorder(hello, max_control_frames_per_second=10)
    client_stream, server_stream = pair()
    nursery.start_soon(serve_h2, server_stream, rec.context())
    client = H2Client(client_stream)
    await client.start()
    await client.stream.send_all(ack * 20)
    goaways = [f for f in await read_frames_to_eof(client) if isinstance(f, GoAwayFrame)]
    assert [g.error_code for g in goaways] == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]


async def test_refused_streams_earn_no_frame_budget(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def held(request: Request) -> Response:
        await gate.wait()
        return await hello(request)

    rec = Recorder(held, max_concurrent_streams=1)
    client = await start(nursery, rec)
    await client.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    await client.request(1)
    await until(lambda: len(rec.requests) == 1)
    # 50 refused HEADERS (fewer than the reset rate allows), then PRIORITY beyond what the one
    # accepted stream earned (100 per stream, plus 100 for the connection).
    block = client.conn.encoder.encode(
        [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"h")]
    )
    refused = b"".join(raw_frame(0x1, sid, block, 0x5) for sid in range(3, 103, 2))
    await client.stream.send_all(refused)
    seen = b""
    with trio.fail_after(5):  # until the last one is refused, so the reads stay apart
        while not any(
            isinstance(f, RstStreamFrame) and f.stream_id == 101 for f in parse_frames(seen)
        ):
            seen += await client.stream.receive_some(65536)
    await client.stream.send_all(FLOODS["priority"] * 250)
    goaways = [f for f in await read_frames_to_eof(client) if isinstance(f, GoAwayFrame)]
    assert [g.error_code for g in goaways] == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
    gate.set()
