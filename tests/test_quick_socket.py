"""QuickStream over real loopback sockets: data, backpressure, close, fd reuse and fairness."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from proxy.quick_socket import CHECKPOINT_EVERY, QuickStream


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[tuple[QuickStream, trio.SocketStream]]:
    """(our QuickStream, the plain trio peer) over one loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        ours = QuickStream.wrap(await trio.open_tcp_stream("127.0.0.1", port))
        peer = await listeners[0].accept()
    async with ours, peer:
        yield ours, peer


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, "unexpected end of stream"
        data += chunk
    return bytes(data)


async def test_megabytes_cross_both_ways_at_once() -> None:
    payload = bytes(range(256)) * 32768  # 8 MiB: more than the socket buffers hold
    async with connected() as (ours, peer):
        got: dict[str, bytes] = {}

        async def read(name: str, stream: trio.abc.ReceiveStream) -> None:
            got[name] = await receive_exactly(stream, len(payload))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ours.send_all, payload)
                nursery.start_soon(peer.send_all, payload)
                nursery.start_soon(read, "at peer", peer)
                nursery.start_soon(read, "at ours", ours)
    assert got["at peer"] == payload
    assert got["at ours"] == payload


async def test_end_of_stream_both_ways() -> None:
    async with connected() as (ours, peer):
        await ours.send_eof()
        assert await peer.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await ours.send_all(b"after eof")
        await peer.send_all(b"still open this way")
        await peer.aclose()
        assert await receive_exactly(ours, 19) == b"still open this way"
        assert await ours.receive_some() == b""


async def test_closing_wakes_a_blocked_receiver_and_later_calls_fail() -> None:
    async with connected() as (ours, _peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await ours.receive_some()

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await ours.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await ours.send_all(b"late")
        with pytest.raises(trio.ClosedResourceError):
            await ours.receive_some()


async def test_a_closed_stream_never_writes_to_the_socket_that_reuses_its_number() -> None:
    async with connected() as (first, _peer):
        number = first.socket.fileno()
        await first.aclose()
        async with connected() as (second, second_peer):
            assert second.socket.fileno() == number  # the kernel hands the number out again
            with pytest.raises(trio.ClosedResourceError):
                await first.send_all(b"for the first client only")
            await second.send_all(b"x")
            assert await second_peer.receive_some() == b"x"  # nothing of the first's arrived


async def send_until_refused(stream: QuickStream) -> None:
    while True:
        await stream.send_all(b"y" * 65536)


async def test_a_reset_is_a_broken_resource() -> None:
    async with connected() as (ours, peer):
        peer.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.aclose()  # linger 0: RST
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            await send_until_refused(ours)


async def test_ready_bytes_still_let_other_tasks_run() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with connected() as (ours, peer), trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await peer.send_all(b"z" * (4 * CHECKPOINT_EVERY))
        before = ticks
        for _ in range(4 * CHECKPOINT_EVERY):
            assert await ours.receive_some(1) == b"z"  # always ready: never parks
        assert ticks - before >= 3
        nursery.cancel_scope.cancel()


async def test_two_senders_at_once_is_a_bug_reported_as_busy() -> None:
    async with connected() as (ours, _peer):
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ours.send_all, b"w" * (64 * 1024 * 1024))
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await ours.send_all(b"v")
                nursery.cancel_scope.cancel()
