"""Notices HTTP/1.1 clients that hang up while their request is still being served.

An HTTP/1.1 server reads nothing while a handler runs, so a client that closes its connection
goes unseen until the response is written. Watching every request would cost a task or a cancel
scope per request on the hot path; instead one sweeper per listener looks, every `interval`, at
the requests that have been running for at least that long, and peeks at their sockets without
reading. An end of stream there cancels the request (Envoy's DC: downstream disconnect).
"""

from __future__ import annotations

import errno
import socket

import trio

_GONE = {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN}


def client_gone(fd: int) -> bool:
    """True when the peer has closed or reset the connection; never consumes a byte."""
    probe = socket.socket(fileno=fd)
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing sent: the normal case
    except OSError as exc:
        return exc.errno in _GONE
    finally:
        probe.detach()  # the fd belongs to the connection's own socket


class HangupSweeper:
    """One per plain-TCP listener; `run` lives as long as the listener's connections."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._watched: dict[int, tuple[trio.CancelScope, float]] = {}

    def watch(self, fd: int, scope: trio.CancelScope) -> None:
        self._watched[fd] = (scope, trio.current_time())

    def unwatch(self, fd: int) -> None:
        self._watched.pop(fd, None)

    def sweep(self, now: float) -> int:
        """Cancel the requests whose clients left; returns how many."""
        cancelled = 0
        for fd, (scope, since) in list(self._watched.items()):
            if now - since >= self.interval and client_gone(fd):
                del self._watched[fd]
                scope.cancel()
                cancelled += 1
        return cancelled

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            if self._watched:
                self.sweep(trio.current_time())
