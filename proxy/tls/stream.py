"""TLS over a socket that OpenSSL itself reads and writes, driven by trio's readiness waits.

trio.SSLStream runs OpenSSL over memory BIOs and moves every record through Python (a lock, a
retry loop and two buffer copies per call). Here the ssl module owns the file descriptor: one
`recv`/`send` call does the TLS work in C, and trio is only asked to wait when OpenSSL says it
must (SSLWantReadError / SSLWantWriteError). Calls that complete at once skip the scheduler,
with QuickStream's fairness rule (proxy/quick_socket.py).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Protocol

import trio

from proxy.quick_socket import Fairness

RECEIVE_SIZE = 65536
_IO_ERRORS = (ssl.SSLError, OSError)


class PeerCertified(Protocol):
    """A handshaken TLS connection (TlsStream, trio.SSLStream) that can show the peer's cert."""

    def getpeercert(self, binary_form: bool = ...) -> Any: ...


class TlsStream(trio.abc.Stream):
    """A trio Stream over an `ssl.SSLSocket` in non-blocking mode; the handshake runs on first
    use or explicitly with `do_handshake()` (callers bound it with a cancel scope)."""

    def __init__(
        self,
        transport: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        raw = transport.socket
        # The descriptor moves from trio's socket object to the ssl module's: one owner.
        plain = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        plain.setblocking(False)
        self._sock = context.wrap_socket(
            plain,
            server_side=server_side,
            server_hostname=server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=True,
        )
        self._handshaken = False
        self._sending = False
        self._receiving = False
        self._closed = False
        self._fair = Fairness()

    # --- what callers read off the connection ------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def selected_alpn_protocol(self) -> str | None:
        return self._sock.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._sock.getpeercert(binary_form)

    def pending(self) -> int:
        """Decrypted bytes OpenSSL holds that no receive has taken yet."""
        return self._sock.pending() if not self._closed else 0

    # --- handshake ---------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        while not self._handshaken:
            try:
                sock.do_handshake()
                self._handshaken = True
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)
            except _IO_ERRORS as exc:
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        await trio.lowlevel.cancel_shielded_checkpoint()

    # --- data --------------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._check_open()
        if not self._handshaken:
            await self.do_handshake()
        self._receiving = True
        try:
            await self._fair.step()
            sock = self._sock
            size = max_bytes or RECEIVE_SIZE
            while True:
                try:
                    return sock.recv(size)
                except ssl.SSLWantReadError:
                    self._fair.parked()
                    await trio.lowlevel.wait_readable(sock)
                except ssl.SSLWantWriteError:
                    # OpenSSL must answer something (a TLS 1.3 KeyUpdate) before reading on.
                    await self._wait_writable_shared()
                except _IO_ERRORS as exc:
                    self._check_open()
                    raise trio.BrokenResourceError(f"TLS receive failed: {exc}") from exc
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check_open()
        if not self._handshaken:
            await self.do_handshake()
        self._sending = True
        try:
            await self._fair.step()
            sock = self._sock
            view = memoryview(data)
            while view:
                try:
                    # A retry after SSLWantWriteError passes the same bytes again, as OpenSSL
                    # requires (CPython enables SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
                    sent = sock.send(view)
                    view = view[sent:]
                except ssl.SSLWantWriteError:
                    self._fair.parked()
                    await trio.lowlevel.wait_writable(sock)
                except ssl.SSLWantReadError:
                    await self._wait_readable_shared()
                except _IO_ERRORS as exc:
                    self._check_open()
                    raise trio.BrokenResourceError(f"TLS send failed: {exc}") from exc
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await trio.lowlevel.wait_writable(self._sock)

    # A task receiving and a task sending may both need the other direction's readiness (rare:
    # key updates). trio allows one waiter per direction, so the second one polls instead.
    async def _wait_readable_shared(self) -> None:
        if self._receiving:
            await trio.sleep(0.001)
        else:
            await trio.lowlevel.wait_readable(self._sock)

    async def _wait_writable_shared(self) -> None:
        if self._sending:
            await trio.sleep(0.001)
        else:
            await trio.lowlevel.wait_writable(self._sock)

    # --- close -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        sock = self._sock
        if self._handshaken:
            try:
                sock.unwrap()  # sends our close_notify; never waits for the peer's
            except (*_IO_ERRORS, ValueError):
                pass
        trio.lowlevel.notify_closing(sock)
        sock.close()
        await trio.lowlevel.checkpoint()
