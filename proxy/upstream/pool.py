"""Per-host connection pools: HTTP/1.1 keep-alive with a FIFO wait, HTTP/2 multiplexing."""

from __future__ import annotations

from collections import deque
from typing import Protocol

import trio

from proxy.http.errors import UpstreamConnectFailure
from proxy.http.model import Request, Response
from proxy.http1.codec import AUTO, Codec
from proxy.upstream.balancer import Host
from proxy.upstream.connect import Connector
from proxy.upstream.h1 import H1Connection
from proxy.upstream.h2 import H2ClientConnection
from proxy.upstream.outgoing import Outgoing


class Pool(Protocol):
    """What a cluster needs from a host's pool."""

    nursery: trio.Nursery | None

    async def send(self, request: Request, out: Outgoing, fresh: bool) -> Response:
        """Run one exchange. The caller has called `host.begin()`; from here on the pool calls
        `host.end()` exactly once: on failure before raising, else when the response body ends."""
        ...

    async def reap(self, now: float) -> None:
        """Close connections idle since before `now - idle_timeout`."""
        ...

    async def aclose(self) -> None: ...


class _Waiter:
    __slots__ = ("conn", "event", "slot")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.conn: H1Connection | None = None
        self.slot = False


class H1Pool:
    """Keep-alive HTTP/1.1 connections to one host, at most `max_connections`; FIFO waiters."""

    def __init__(
        self,
        host: Host,
        connector: Connector,
        max_connections: int,
        idle_timeout: float,
        codec: Codec = AUTO,
    ) -> None:
        self.host = host
        self.codec = codec
        self.default_host = host.address.encode()
        self.nursery: trio.Nursery | None = None
        self._connector = connector
        self._max = max(1, max_connections)
        self._idle_timeout = idle_timeout
        self._idle: list[H1Connection] = []  # most recently used last (LIFO reuse)
        self._all: set[H1Connection] = set()
        self._count = 0  # open or opening
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    async def send(self, request: Request, out: Outgoing, fresh: bool) -> Response:
        nursery = self.nursery
        if nursery is None:
            self.host.end(True)
            raise RuntimeError("the ClusterManager is not running (use `async with`)")
        try:
            conn = await self._acquire(fresh)
        except BaseException as exc:
            self.host.end(not isinstance(exc, trio.Cancelled))
            raise
        return await conn.exchange(request, out, nursery)

    async def _acquire(self, fresh: bool) -> H1Connection:
        idle = self._idle
        if fresh:
            # One stale connection usually means all idle ones went stale together.
            while idle:
                await idle.pop().close()
        else:
            now = trio.current_time()
            while idle:
                conn = idle.pop()
                if now - conn.idle_since < self._idle_timeout and conn.quiet():
                    return conn
                await conn.close()
        if self._closed:
            raise UpstreamConnectFailure("the cluster is shutting down")
        if self._count < self._max:
            self._count += 1
            return await self._open()
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if not waiter.event.is_set():
                self._waiters.remove(waiter)
            elif waiter.conn is not None:
                if not self.release(waiter.conn):
                    await waiter.conn.close()
            elif waiter.slot:
                self._count -= 1
                self._pass_slot()
            raise
        handed = waiter.conn
        if handed is not None:
            if handed.quiet():
                return handed
            await handed.close()  # its slot goes to the next waiter; queue again
            return await self._acquire(fresh)
        if not waiter.slot:
            raise UpstreamConnectFailure("the cluster is shutting down")
        return await self._open()

    async def _open(self) -> H1Connection:
        """Connect using a slot already counted in `_count`."""
        try:
            stream = await self._connector.connect(self.host.host, self.host.port)
        except BaseException as exc:
            if isinstance(exc, UpstreamConnectFailure):
                self.host.healthy = False
            self._count -= 1
            self._pass_slot()
            raise
        conn = H1Connection(stream, self.host, self)
        self._all.add(conn)
        self.host.connected()
        return conn

    def _pass_slot(self) -> None:
        if self._waiters and self._count < self._max:
            waiter = self._waiters.popleft()
            waiter.slot = True
            self._count += 1
            waiter.event.set()

    def release(self, conn: H1Connection) -> bool:
        """Take back a reusable connection; False if the caller must close it instead."""
        if self._closed or conn.closed:
            return False
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.conn = conn
            waiter.event.set()
        else:
            self._idle.append(conn)
        return True

    def forget(self, conn: H1Connection) -> None:
        """`conn` is closing: free its slot."""
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._count -= 1
        self.host.disconnected()
        self._pass_slot()

    async def reap(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0].idle_since >= self._idle_timeout:
            await idle.pop(0).close()

    async def aclose(self) -> None:
        self._closed = True
        while self._waiters:
            self._waiters.popleft().event.set()
        for conn in list(self._all):
            await conn.close()


class H2Pool:
    """HTTP/2 connections to one host: streams share a connection until it is full."""

    def __init__(
        self,
        host: Host,
        connector: Connector,
        max_connections: int,
        max_streams: int,
        idle_timeout: float,
    ) -> None:
        self.host = host
        self.nursery: trio.Nursery | None = None
        self._connector = connector
        self._max = max(1, max_connections)
        self._max_streams = max(1, max_streams)
        self._idle_timeout = idle_timeout
        self._conns: list[H2ClientConnection] = []
        self._connecting = False
        self._changed = trio.Event()
        self._closed = False

    def wake(self) -> None:
        """Stream capacity changed (a stream ended, settings arrived, a connection came or went)."""
        event, self._changed = self._changed, trio.Event()
        event.set()

    async def send(self, request: Request, out: Outgoing, fresh: bool) -> Response:
        try:
            conn = await self._acquire()
            stream = conn.open_stream(request, out)
        except BaseException as exc:
            self.host.end(not isinstance(exc, trio.Cancelled))
            raise
        return await conn.exchange(stream)

    async def _acquire(self) -> H2ClientConnection:
        while True:
            if self._closed or self.nursery is None:
                raise UpstreamConnectFailure("the cluster is not running")
            for conn in self._conns:
                if conn.available():
                    return conn
            if not self._connecting and len(self._conns) < self._max:
                # One connect at a time per host: a burst of requests shares the new connection.
                self._connecting = True
                try:
                    conn = await self._open(self.nursery)
                finally:
                    self._connecting = False
                    self.wake()
                if conn.available():
                    return conn
                continue
            await self._changed.wait()

    async def _open(self, nursery: trio.Nursery) -> H2ClientConnection:
        try:
            stream = await self._connector.connect(self.host.host, self.host.port)
        except UpstreamConnectFailure:
            self.host.healthy = False
            raise
        conn = H2ClientConnection(
            stream,
            self.host,
            self,
            nursery,
            tls=self._connector.tls,
            max_streams=self._max_streams,
            write_timeout=max(self._idle_timeout, 1.0),
        )
        self._conns.append(conn)
        self.host.connected()
        try:
            await conn.start()
        except BaseException:
            await conn.close()
            raise
        return conn

    def forget(self, conn: H2ClientConnection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
            self.host.disconnected()
        self.wake()

    async def reap(self, now: float) -> None:
        for conn in list(self._conns):
            if not conn.streams and now - conn.idle_since >= self._idle_timeout:
                await conn.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self.wake()
        for conn in list(self._conns):
            await conn.aclose()
