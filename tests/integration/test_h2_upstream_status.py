"""An h2c upstream answering with a malformed :status: that request gets 502 UPE, and the
proxy (whose cluster tasks once died of the ValueError) serves the next request."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
import trio

from tests.integration.harness import H1Client, meshwire, one_route_config, raw_backend


def answering(statuses: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    """An h2c server that answers :path P with :status statuses[P] (unchecked) and body `ok`."""

    async def behave(stream: trio.SocketStream) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False
        )
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers or [])[b":path"]
                    conn.send_headers(event.stream_id, [(b":status", statuses[path])])
                    conn.send_data(event.stream_id, b"ok", end_stream=True)
            await stream.send_all(conn.data_to_send())

    return behave


@pytest.mark.parametrize("status", [b"abc", b"099", b"", b"2000", b"600", b"20 "])
async def test_a_malformed_status_is_a_502_and_the_proxy_serves_on(status: bytes) -> None:
    async with raw_backend(answering({b"/bad": status, b"/good": b"200"})) as port:
        config = one_route_config(0, port, upstream_protocol="h2c")
        async with meshwire(config) as mw:
            async with H1Client.connect(mw.port()) as client:
                bad = await client.request("GET", "/bad")
                good = await client.request("GET", "/good")
    assert (bad.status, bad.header(b"x-meshwire-response-flags")) == (502, b"UPE")
    assert (good.status, good.body) == (200, b"ok")
