"""Listening sockets: alone (trio's defaults), shared by --concurrency workers through
SO_REUSEPORT, reserved by their supervisor, and the Unix socket of a worker's private admin."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass

import trio

from proxy.reasons import os_reason


class BindError(Exception):
    """A listener (or the admin port) could not bind its address: in use, not ours, no such
    host. `name` is the listener's (or "admin"); the caller knows where the address came from."""

    def __init__(self, name: str, address: str, reason: str) -> None:
        self.name = name
        self.address = address
        self.reason = reason
        super().__init__(f"cannot listen on {address}: {reason}")


# trio's default backlog: as many as the system allows (listen() caps it at somaxconn).
BACKLOG = 0xFFFF


async def open_listeners(
    name: str, address: str, host: str, port: int, *, reuse_port: bool
) -> list[trio.SocketListener]:
    """Listen on every address `host` resolves to, as trio.open_tcp_listeners does; with
    `reuse_port`, each socket joins the port's SO_REUSEPORT group, whose members the kernel
    spreads new connections over (one per worker process). BindError names listener `name`."""
    if not reuse_port:
        try:
            return await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise BindError(name, address, os_reason(exc)) from exc
    return listen_on(await bind_shared(name, address, host, port))


async def bind_shared(
    name: str, address: str, host: str, port: int
) -> list[trio.socket.SocketType]:
    """SO_REUSEPORT sockets bound on every address `host` resolves to, not yet listening: the
    kernel gives them no connection until `listen_on`."""
    socks: list[trio.socket.SocketType] = []
    try:
        for family, type_, proto, sockaddr in await _addresses(host, port):
            sock = trio.socket.socket(family, type_, proto)
            socks.append(sock)
            _share(sock, family)
            await sock.bind(sockaddr)
    except BaseException as exc:
        for sock in socks:
            sock.close()
        if isinstance(exc, OSError):
            raise BindError(name, address, os_reason(exc)) from exc
        raise
    return socks


def listen_on(socks: list[trio.socket.SocketType]) -> list[trio.SocketListener]:
    """Listen on bound sockets: from now on the kernel hands them their share of connections."""
    for sock in socks:
        sock.listen(BACKLOG)
    return [trio.SocketListener(sock) for sock in socks]


async def open_unix_listener(path: str) -> trio.SocketListener:
    """A listener on a Unix socket at `path` (a stale one left by a killed process replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


@dataclass
class Reservation:
    """A port held for workers: bound with SO_REUSEPORT, never listening, so the kernel hands
    it no connection while no other program can take the port between worker restarts."""

    port: int
    sockets: list[socket.socket]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


async def reserve(name: str, address: str, host: str, port: int) -> Reservation:
    """Hold `host:port` for SO_REUSEPORT listeners (port 0: pick one, the same on every
    address). BindError when it is taken: anything listening there, an SO_REUSEPORT group
    included (another meshwire's workers), refuses the probe, which does not share the port."""
    try:
        return await _reserve(host, port)
    except OSError as exc:
        raise BindError(name, address, os_reason(exc)) from exc


async def _reserve(host: str, port: int) -> Reservation:
    found: list[socket.socket] = []
    try:
        for family, type_, proto, sockaddr in await _addresses(host, port):
            probe = socket.socket(family, type_, proto)
            try:
                # SO_REUSEADDR only: binding fails if anyone listens on the port, but not on
                # connections of an earlier run in TIME_WAIT, nor on the reservation below.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((sockaddr[0], port, *sockaddr[2:]))
                port = int(probe.getsockname()[1])
                held = socket.socket(family, type_, proto)
                try:
                    _share(held, family)
                    held.bind((sockaddr[0], port, *sockaddr[2:]))
                except BaseException:
                    held.close()
                    raise
                found.append(held)
            finally:
                probe.close()
    except BaseException:
        for sock in found:
            sock.close()
        raise
    return Reservation(port, found)


def _share(sock: socket.socket | trio.socket.SocketType, family: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


async def _addresses(host: str, port: int) -> list[tuple[int, int, int, tuple[object, ...]]]:
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    found: list[tuple[int, int, int, tuple[object, ...]]] = [
        (family, type_, proto, tuple(addr)) for family, type_, proto, _, addr in infos
    ]
    if not found:
        raise OSError(errno.EADDRNOTAVAIL, "no address to listen on")
    return found
