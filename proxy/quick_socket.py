"""A TCP stream that asks the kernel first and the trio scheduler only when it has to wait.

trio.SocketStream passes through the scheduler twice on every send and receive, even when the
kernel completes the call at once (a cancellation check, then a shielded checkpoint). On a proxy
hop that is four trips per request leg. QuickStream makes the system call directly and parks the
task only on EAGAIN; every CHECKPOINT_EVERY-th call that did not park yields anyway, so a peer
whose bytes are always ready cannot monopolise the loop.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import trio

RECEIVE_SIZE = 65536
CHECKPOINT_EVERY = 16


def _broken(exc: OSError) -> trio.BrokenResourceError:
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class Fairness:
    """Counts calls that completed without parking; every CHECKPOINT_EVERY-th one yields."""

    __slots__ = ("quick",)

    def __init__(self) -> None:
        self.quick = 0

    async def step(self) -> None:
        self.quick += 1
        if self.quick >= CHECKPOINT_EVERY:
            self.quick = 0
            await trio.lowlevel.checkpoint()

    def parked(self) -> None:
        self.quick = 0


class QuickStream(trio.abc.HalfCloseableStream):
    """The same contract as trio.SocketStream (it owns `socket`), with cheaper fast paths."""

    __slots__ = ("_fair", "_receiving", "_sending", "socket")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.socket = sock
        self._fair = Fairness()
        self._sending = False
        self._receiving = False

    @classmethod
    def wrap(cls, stream: trio.SocketStream) -> QuickStream:
        return cls(stream.socket)

    def _fd(self) -> int:
        # Looked up on every call, never cached: a closed socket's number may already belong to
        # another connection, and a stale write there would hand one client's bytes to another.
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        return fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await self._fair.step()
            size = max_bytes or RECEIVE_SIZE
            while True:
                try:
                    return os.read(self._fd(), size)
                except BlockingIOError:
                    self._fair.parked()
                    await trio.lowlevel.wait_readable(self.socket)
                except OSError as exc:
                    self._fd()  # closed under us: ClosedResourceError, as trio's streams say
                    raise _broken(exc) from exc
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        self._sending = True
        try:
            await self._fair.step()
            view = memoryview(data)
            if not view:
                self._fd()
            while view:
                try:
                    sent = os.write(self._fd(), view)
                    view = view[sent:]
                except BlockingIOError:
                    self._fair.parked()
                    await trio.lowlevel.wait_writable(self.socket)
                except OSError as exc:
                    self._fd()
                    raise _broken(exc) from exc
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._fd()
        await trio.lowlevel.wait_writable(self.socket)

    async def send_eof(self) -> None:
        self._fd()
        await trio.lowlevel.checkpoint()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _broken(exc) from exc

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self.socket.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, buffersize: int = 0) -> Any:
        return self.socket.getsockopt(level, option, buffersize)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()
