"""SO_REUSEPORT listeners share a port the supervisor reserved; a taken port is refused."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from proxy.bind import BindError, bind_shared, listen_on, open_listeners, reserve

HOST = "127.0.0.1"


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


def _connect(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection((HOST, port)) for _ in range(n)]


async def _shared(port: int) -> list[trio.SocketListener]:
    return await open_listeners("w", f"{HOST}:{port}", HOST, port, reuse_port=True)


async def test_workers_share_a_reserved_port_and_the_kernel_spreads_connections() -> None:
    reservation = await reserve("ingress", f"{HOST}:0", HOST, 0)
    try:
        port = reservation.port
        first, second = await _shared(port), await _shared(port)
        clients = _connect(port, 64)
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


async def test_a_bound_worker_gets_no_connection_until_it_listens() -> None:
    reservation = await reserve("ingress", f"{HOST}:0", HOST, 0)
    try:
        port = reservation.port
        early = await _shared(port)
        late = await bind_shared("ingress", f"{HOST}:{port}", HOST, port)
        clients = _connect(port, 16)
        assert _accepted(early[0]) == 16  # nothing for the one not listening yet
        listening = listen_on(late)
        clients += _connect(port, 64)
        assert min(_accepted(early[0]), _accepted(listening[0])) > 0
        for client in clients:
            client.close()
        for listener in (*early, *listening):
            await listener.aclose()
    finally:
        reservation.close()


async def test_a_port_someone_listens_on_is_refused() -> None:
    with socket.socket() as plain:
        plain.bind((HOST, 0))
        plain.listen()
        port = plain.getsockname()[1]
        with pytest.raises(BindError) as info:
            await reserve("ingress", f"{HOST}:{port}", HOST, port)
    assert str(info.value) == f"cannot listen on {HOST}:{port}: address already in use"


async def test_a_port_other_workers_listen_on_is_refused() -> None:
    """Another meshwire's SO_REUSEPORT group would accept us as a member: the probe does not."""
    reservation = await reserve("ingress", f"{HOST}:0", HOST, 0)
    port = reservation.port
    workers = await _shared(port)
    try:
        with pytest.raises(BindError, match="address already in use"):
            await reserve("ingress", f"{HOST}:{port}", HOST, port)
        with socket.socket() as plain:  # a single-process meshwire (no SO_REUSEPORT)
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="in use"):
                plain.bind((HOST, port))
    finally:
        for listener in workers:
            await listener.aclose()
        reservation.close()
