"""SO_REUSEPORT listeners share a port the supervisor reserved; a taken port is refused."""

from __future__ import annotations

import errno
import os
import socket

import pytest
import trio

from proxy.bind import open_listeners, reserve


def _accepted(listener: trio.SocketListener) -> int:
    """How many connections wait in the listener's queue (accepted and closed here): connect()
    returned for each, so the kernel has queued every one already."""
    count = 0
    with socket.socket(fileno=os.dup(listener.socket.fileno())) as queue:
        queue.setblocking(False)
        while True:
            try:
                conn, _ = queue.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


async def test_workers_share_a_reserved_port_and_the_kernel_spreads_connections() -> None:
    reservation = await reserve("127.0.0.1", 0)
    try:
        port = reservation.port
        first = await open_listeners("127.0.0.1", port, reuse_port=True)
        second = await open_listeners("127.0.0.1", port, reuse_port=True)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        try:
            counts = [_accepted(first[0]), _accepted(second[0])]
        finally:
            for client in clients:
                client.close()
        # The reservation never listens, so it holds none; the kernel hashes the 64 connections
        # over both members (all in one would happen with probability 2**-63).
        assert sum(counts) == 64
        assert min(counts) > 0, counts
        for listener in (*first, *second):
            await listener.aclose()
    finally:
        reservation.close()


async def test_a_port_someone_listens_on_is_refused() -> None:
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError, match="in use") as info:
            await reserve("127.0.0.1", plain.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE


async def test_a_port_other_workers_listen_on_is_refused() -> None:
    """Another meshwire's SO_REUSEPORT group would accept us as a member: the probe does not."""
    reservation = await reserve("127.0.0.1", 0)
    workers = await open_listeners("127.0.0.1", reservation.port, reuse_port=True)
    try:
        with pytest.raises(OSError, match="in use") as info:
            await reserve("127.0.0.1", reservation.port)
        assert info.value.errno == errno.EADDRINUSE
        with socket.socket() as plain:  # a single-process meshwire (no SO_REUSEPORT)
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="in use"):
                plain.bind(("127.0.0.1", reservation.port))
    finally:
        for listener in workers:
            await listener.aclose()
        reservation.close()
