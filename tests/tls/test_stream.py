"""TlsStream over real loopback sockets: data both ways, backpressure, close, and misuse."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from proxy.tls.ca import CertificateAuthority
from proxy.tls.stream import TlsStream
from proxy.tls.workload import WorkloadIdentity
from tests.tls.helpers import new_ca, sid


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return new_ca(tmp_path / "ca")


@contextlib.asynccontextmanager
async def tls_pair(ca: CertificateAuthority) -> AsyncIterator[tuple[TlsStream, TlsStream]]:
    """A handshaken (client, server) pair over one loopback TCP connection."""
    server_id = WorkloadIdentity.issue(sid("server"), ca.issue)
    client_id = WorkloadIdentity.issue(sid("client"), ca.issue)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        tcp_client = await trio.open_tcp_stream("127.0.0.1", port)
        tcp_server = await listeners[0].accept()
    client = TlsStream(tcp_client, client_id.client_context(), server_hostname="server")
    server = TlsStream(tcp_server, server_id.server_context(), server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    try:
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()


async def receive_exactly(stream: TlsStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, "unexpected end of stream"
        data += chunk
    return bytes(data)


async def test_handshake_shows_alpn_and_the_peer_certificate(ca: CertificateAuthority) -> None:
    async with tls_pair(ca) as (client, server):
        assert client.selected_alpn_protocol() == "h2"
        assert server.selected_alpn_protocol() == "h2"
        assert isinstance(server.getpeercert(binary_form=True), bytes)
        await client.send_all(b"ping")
        assert await server.receive_some(4) == b"ping"


async def test_megabytes_cross_both_ways_at_once(ca: CertificateAuthority) -> None:
    # Far more than the socket buffers hold: both senders must wait for writability
    # (SSLWantWriteError) while the other side's reader drains them.
    payload = bytes(range(256)) * 16384  # 4 MiB
    async with tls_pair(ca) as (client, server):
        got: dict[str, bytes] = {}

        async def pump(name: str, sender: TlsStream, receiver: TlsStream) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send_all, payload)

                async def read() -> None:
                    got[name] = await receive_exactly(receiver, len(payload))

                nursery.start_soon(read)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, "up", client, server)
                nursery.start_soon(pump, "down", server, client)
        assert got["up"] == payload
        assert got["down"] == payload


async def test_pending_counts_decrypted_bytes_not_yet_taken(ca: CertificateAuthority) -> None:
    async with tls_pair(ca) as (client, server):
        await client.send_all(b"x" * 1000)
        first = await server.receive_some(10)
        assert first == b"x" * 10
        assert server.pending() == 990
        assert await receive_exactly(server, 990) == b"x" * 990
        assert server.pending() == 0


async def test_a_peer_close_reads_as_end_of_stream(ca: CertificateAuthority) -> None:
    async with tls_pair(ca) as (client, server):
        await client.send_all(b"last words")
        await client.aclose()
        assert await receive_exactly(server, 10) == b"last words"
        with trio.fail_after(5):
            assert await server.receive_some() == b""


async def test_closing_wakes_a_waiting_receiver_and_later_calls_fail(
    ca: CertificateAuthority,
) -> None:
    async with tls_pair(ca) as (client, _server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await client.receive_some()

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"late")
        await client.aclose()  # idempotent


async def test_two_senders_at_once_is_a_bug_reported_as_busy(ca: CertificateAuthority) -> None:
    payload = b"y" * (8 * 1024 * 1024)  # blocks: nobody reads on the other side
    async with tls_pair(ca) as (client, _server):
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, payload)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await client.send_all(b"z")
                nursery.cancel_scope.cancel()


async def test_a_failed_handshake_is_a_broken_resource(ca: CertificateAuthority) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        plain_client = await trio.open_tcp_stream("127.0.0.1", port)
        tcp_server = await listeners[0].accept()
    server_id = WorkloadIdentity.issue(sid("server"), ca.issue)
    server = TlsStream(tcp_server, server_id.server_context(), server_side=True)
    async with plain_client:
        await plain_client.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()
    await server.aclose()


async def test_ready_records_still_let_other_tasks_run(ca: CertificateAuthority) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with tls_pair(ca) as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await client.send_all(b"z" * 64)
        assert await server.receive_some(1) == b"z"  # the record is decrypted now
        before = ticks
        for _ in range(63):
            assert await server.receive_some(1) == b"z"  # from OpenSSL's buffer: never parks
        assert ticks - before >= 3
        nursery.cancel_scope.cancel()
