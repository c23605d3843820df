"""The hang-up sweeper peeks at real sockets: open, pipelined data, closed, reset."""

from __future__ import annotations

import socket
import struct

import trio

from proxy.downstream.hangup import HangupSweeper, client_gone


def test_client_gone_tells_an_open_socket_from_a_closed_one() -> None:
    server, client = socket.socketpair()
    with server, client:
        assert not client_gone(server.fileno())
        client.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request is not a hang-up
        assert not client_gone(server.fileno())
        assert server.recv(100) == b"GET /next HTTP/1.1\r\n"  # and peeking consumed nothing
        client.close()
        assert client_gone(server.fileno())


def test_client_gone_on_a_reset_tcp_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with server:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST instead of FIN
            assert client_gone(server.fileno())


async def test_sweep_cancels_only_requests_older_than_the_interval_whose_client_left() -> None:
    sweeper = HangupSweeper(interval=0.1)
    gone_server, gone_client = socket.socketpair()
    open_server, open_client = socket.socketpair()
    with gone_server, open_server, open_client:
        gone_client.close()
        gone_scope, open_scope = trio.CancelScope(), trio.CancelScope()
        sweeper.watch(gone_server.fileno(), gone_scope)
        sweeper.watch(open_server.fileno(), open_scope)
        now = trio.current_time()
        assert sweeper.sweep(now) == 0  # too young to be worth a look
        assert sweeper.sweep(now + 0.2) == 1
        assert gone_scope.cancel_called
        assert not open_scope.cancel_called
        sweeper.unwatch(open_server.fileno())
        assert sweeper.sweep(now + 1) == 0
