"""Listeners, accept loops, TLS handshakes and graceful drain; owns the root nursery."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from config import schema
from exporters.access_log import AccessLog
from exporters.instruments import Instruments
from proxy.admin.handler import AdminHandler
from proxy.app import App, ListenerSpec
from proxy.bind import bind_shared, listen_on, open_listeners, open_unix_listener
from proxy.chain import Handler
from proxy.downstream.context import ConnectionContext, OnComplete
from proxy.downstream.hangup import HangupSweeper
from proxy.downstream.idle import IdleConnections
from proxy.downstream.negotiate import serve_connection
from proxy.http1.codec import Codec
from proxy.observe import Completion
from proxy.quick_socket import QuickStream
from proxy.stats import ListenerStats, Stats
from proxy.tls.stream import TlsStream

log = logging.getLogger("meshwire.server")

# Accept errors that mean "out of file descriptors or memory for now": back off, keep listening.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass(frozen=True)
class Bound:
    """Where each listener ended up (port 0 picks a free one): name → (host, port)."""

    addresses: dict[str, tuple[str, int]]


@dataclass(frozen=True)
class Sockets:
    """How `serve` binds: alone (the defaults), or as one of the --concurrency workers."""

    # Join each listener port's SO_REUSEPORT group, which the kernel spreads connections over.
    reuse_port: bool = False
    # Serve the admin endpoints on this Unix socket instead of app.admin: a worker's, which
    # only its supervisor reads (and whose reads are not counted in the stats it sums).
    admin_path: str | None = None
    # Bind now, listen only once this is set (SO_REUSEPORT only): a worker waits for all its
    # siblings, so that no connection lands before every one can take its share, and none at
    # all when one of them cannot start.
    listen_gate: trio.Event | None = None


class AdminPort(Handler, Protocol):
    """The admin listener's handler; told where every listener ended up once all are bound."""

    bound: dict[str, tuple[str, int]]


# Builds the admin handler from the app and the server's shutdown and draining events.
AdminFactory = Callable[[App, trio.Event, trio.Event], AdminPort]


def _spiffe_id(cert: object) -> str | None:
    """The first URI SAN of a verified peer certificate (a SPIFFE id in a mesh), if any."""
    if not isinstance(cert, dict):
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI":
            return str(value)
    return None


class _Listener:
    """One bound listener: accepts, handshakes, and hands each connection to the codecs."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        limits: schema.Limits,
        stats: ListenerStats,
        protocols: frozenset[str],
        ssl_context: ssl.SSLContext | None,
        on_complete: OnComplete | None,
        draining: trio.Event,
        codec: Codec,
    ) -> None:
        self.name = name
        self._codec = codec
        self._handler = handler
        self._limits = limits
        self._stats = stats
        self._protocols = protocols
        self._ssl = ssl_context
        self._on_complete = on_complete
        self._draining = draining
        # TLS hides a peer's close behind records we would have to read; plain TCP can be peeked.
        self.hangup = HangupSweeper() if ssl_context is None else None
        self.idle = IdleConnections(
            limits.max_connections, limits.overload_threshold, stats.cx_active
        )
        self._clients: dict[str, int] = {}  # open connections by source IP
        self._calm = limits.max_connections * limits.overload_threshold
        self._full_logged = False

    async def accept_loop(
        self, listeners: list[trio.SocketListener], connections: trio.Nursery
    ) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_one, listener, connections)

    async def _accept_one(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        limits = self._limits
        stats = self._stats
        clients = self._clients
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    log.error("listener %s: accept failed (%s); backing off", self.name, exc)
                    await trio.sleep(0.1)
                    continue
                try:
                    addr = stream.socket.getpeername()
                except OSError:  # gone already
                    await trio.aclose_forcefully(stream)
                    continue
                if stream.socket.family == socket.AF_UNIX:  # a worker's private admin socket
                    addr = ("unix", 0)
                client = addr[0]
                held = clients.get(client, 0)
                if held >= limits.max_connections_per_client:
                    stats.cx_client_overflow.inc()
                    await trio.aclose_forcefully(stream)
                    continue
                active = stats.cx_active.value
                if active >= limits.max_connections and not self._make_room():
                    stats.cx_overflow.inc()
                    await trio.aclose_forcefully(stream)
                    continue
                if self._full_logged and active < self._calm:
                    self._full_logged = False
                clients[client] = held + 1
                connections.start_soon(self._serve, stream, client, _format_peer(addr))

    def _make_room(self) -> bool:
        """At max_connections, close the longest-idle connection for the new one: refusing it
        instead would let a flood of silent connections lock every client out."""
        if not self._full_logged:
            self._full_logged = True
            log.warning(
                "listener %s: at max_connections (%d): closing idle connections for new ones, "
                "refusing when none is idle (downstream_cx_idle_evicted, downstream_cx_overflow)",
                self.name,
                self._limits.max_connections,
            )
        if self.idle.evict():
            self._stats.cx_idle_evicted.inc()
            return True
        return False

    async def _serve(self, stream: trio.SocketStream, client: str, peer: str) -> None:
        conn: trio.abc.Stream = stream
        try:
            tls = None if self._ssl is None else TlsStream(stream, self._ssl, server_side=True)
            conn = QuickStream.wrap(stream) if tls is None else tls
            if not await self._greeted(stream, tls):
                return
            alpn: str | None = None
            identity: str | None = None
            if tls is not None:
                alpn = tls.selected_alpn_protocol()
                identity = _spiffe_id(tls.getpeercert())
            ctx = ConnectionContext(
                self._handler,
                self._limits,
                self._stats,
                peer=peer,
                tls=tls is not None,
                alpn=alpn,
                peer_identity=identity,
                draining=self._draining,
                idle=self.idle,
                codec=self._codec,
            )
            ctx.protocols = self._protocols
            ctx.on_complete = self._on_complete
            ctx.hangup = self.hangup
            await serve_connection(conn, ctx)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("listener %s: connection from %s ended: %s", self.name, peer, exc)
        except Exception:
            # A failing connection must never take its listener down: log it and move on.
            log.exception("listener %s: connection from %s failed", self.name, peer)
        finally:
            held = self._clients[client] - 1
            if held:
                self._clients[client] = held
            else:
                del self._clients[client]
            await trio.aclose_forcefully(conn)

    async def _greeted(self, stream: trio.SocketStream, tls: TlsStream | None) -> bool:
        """Wait, within header_read_timeout of accept, for the client's first bytes: on plain
        TCP anything at all, over TLS the whole handshake. False when it sent nothing in time,
        overload closed it first, or the server is draining."""
        stats = self._stats
        if self._draining.is_set():
            stats.cx_total.inc()
            return False
        # Counted while it waits, as the codecs count it once it is served: silent connections
        # must fill max_connections (and trigger overload), not hide from it.
        stats.cx_active.inc()
        scope = self.idle.open(self._limits.header_read_timeout)
        try:
            with scope:
                if tls is None:
                    # Readable also means closed: the codec then sees the end of stream itself.
                    await trio.lowlevel.wait_readable(stream.socket)
                else:
                    await tls.do_handshake()
                return True
        finally:
            self.idle.close(scope)
            stats.cx_active.dec()
        stats.cx_total.inc()  # it never reaches the codecs, which count the others
        if scope.deadline <= trio.current_time():
            stats.cx_first_byte_timeout.inc()
        return False


def _format_peer(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listener_for(
    spec: ListenerSpec,
    draining: trio.Event,
    logs: list[AccessLog],
    instruments: Instruments | None,
    codec: Codec,
) -> _Listener:
    access: AccessLog | None = None
    if spec.config.access_log is not None:
        access = AccessLog(spec.config.access_log.path)
        logs.append(access)
    on_complete = Completion(access, instruments) if access or instruments else None
    return _Listener(
        spec.config.name,
        spec.handler,
        spec.config.limits,
        spec.stats,
        spec.protocols,
        spec.ssl_context,
        on_complete,
        draining,
        codec,
    )


async def serve(
    app: App,
    shutdown: trio.Event,
    *,
    binding: Sockets = Sockets(),
    admin_handler: AdminFactory = AdminHandler,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every listener (all before serving any), serve until `shutdown`, then drain.

    Drain: stop accepting, tell open connections (Connection: close / GOAWAY), and give
    in-flight requests up to `drain_timeout` before cancelling what is left.
    """
    draining = trio.Event()
    access_logs: list[AccessLog] = []
    bound: dict[str, tuple[str, int]] = {}
    plan: list[tuple[_Listener, list[trio.SocketListener]]] = []
    waiting: list[tuple[_Listener, list[trio.socket.SocketType]]] = []  # for the listen gate
    try:
        for spec in app.listeners:
            name, address, host, port = spec.config.name, spec.config.address, spec.host, spec.port
            instruments = app.telemetry.instruments
            if binding.listen_gate is not None:
                bound_only = await bind_shared(name, address, host, port)
                listener = _listener_for(spec, draining, access_logs, instruments, app.codec)
                waiting.append((listener, bound_only))
                bound[name] = _sockname(bound_only[0])
                continue
            sockets = await open_listeners(name, address, host, port, reuse_port=binding.reuse_port)
            listener = _listener_for(spec, draining, access_logs, instruments, app.codec)
            plan.append((listener, sockets))
            bound[name] = _sockname(sockets[0].socket)
        if binding.admin_path is not None or app.admin is not None:
            admin = admin_handler(app, shutdown, draining)
            if binding.admin_path is not None:
                admin_stats = ListenerStats(Stats(), "admin")  # the supervisor's reads: uncounted
                sockets = [await open_unix_listener(binding.admin_path)]
            else:
                assert app.admin is not None
                admin_stats = ListenerStats(app.stats, "admin")
                host, port = app.admin
                address = app.config.admin.address if app.config.admin else f"{host}:{port}"
                sockets = await open_listeners("admin", address, host, port, reuse_port=False)
                bound["admin"] = _sockname(sockets[0].socket)
            admin_listener = _Listener(
                "admin",
                admin,
                schema.Limits(),
                admin_stats,
                frozenset({"http1"}),
                None,
                None,
                draining,
                app.codec,
            )
            plan.append((admin_listener, sockets))
            admin.bound = bound
    except BaseException:
        for _, sockets in plan:
            for s in sockets:
                await trio.aclose_forcefully(s)
        for _, socks in waiting:
            for sock in socks:
                sock.close()
        raise
    try:
        async with app.clusters, trio.open_nursery() as sweepers:
            for listener, _ in plan:
                if listener.hangup is not None:
                    sweepers.start_soon(listener.hangup.run)
            if app.sidecar is not None:  # registers our internal port: bind first, then publish
                await sweepers.start(app.sidecar.run, bound, shutdown)
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as acceptors:
                    gate = binding.listen_gate
                    if gate is not None:
                        task_status.started(Bound(bound))  # bound; listening once the gate opens
                        await _first_of(gate, shutdown)
                        if not shutdown.is_set():
                            plan.extend((lr, listen_on(socks)) for lr, socks in waiting)
                    for listener, sockets in plan:
                        acceptors.start_soon(listener.accept_loop, sockets, connections)
                    if gate is None:
                        task_status.started(Bound(bound))
                    await shutdown.wait()
                    log.info(
                        "draining: stop accepting; waiting up to %ss", app.config.drain_timeout
                    )
                    acceptors.cancel_scope.cancel()
                draining.set()
                for listener, _ in plan:
                    listener.idle.cancel_all()  # silent and idle connections have nothing to finish
                connections.cancel_scope.deadline = trio.current_time() + app.config.drain_timeout
            sweepers.cancel_scope.cancel()  # the connections they watched are all gone
    finally:
        # Accept loops close their sockets; these never reached one if start-up failed after
        # binding (a sidecar component that cannot start). Closing twice is harmless.
        for _, sockets in plan:
            for s in sockets:
                await trio.aclose_forcefully(s)
        for _, socks in waiting:
            for sock in socks:
                sock.close()
        for access in access_logs:
            access.close()
        if app.owns_telemetry:
            await app.telemetry.aclose()  # flush what is queued; bounded, never raises


async def _first_of(*events: trio.Event) -> None:
    """Until any of `events` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:

            async def wait(event: trio.Event = event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def _sockname(sock: trio.socket.SocketType) -> tuple[str, int]:
    addr = sock.getsockname()
    return str(addr[0]), int(addr[1])
