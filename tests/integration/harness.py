"""Run meshwire in-process on loopback, plus small independent h11 / h2 clients and backends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h2.config
import h2.connection
import h2.events
import h11
import trio

from config import schema
from proxy.app import App, build
from proxy.chain import Handler
from proxy.downstream.context import ConnectionContext
from proxy.downstream.negotiate import serve_connection
from proxy.h2compat import allow_streams_after_goaway
from proxy.server import Bound, serve
from proxy.stats import ListenerStats, Stats


@dataclass
class Running:
    """A meshwire serving in this process: where it listens, its App, and the drain trigger."""

    bound: Bound
    app: App
    shutdown: trio.Event
    stopped: trio.Event

    def port(self, name: str = "ingress") -> int:
        return self.bound.addresses[name][1]

    def stat(self, name: str) -> int:
        for item in (*self.app.stats.counters(), *self.app.stats.gauges()):
            if item.name == name:
                return item.value
        raise KeyError(name)


@asynccontextmanager
async def meshwire(
    config: schema.Config, *, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Running]:
    """Serve `config` until the block ends, then drain (`environ` stands in for os.environ)."""
    app = build(config, environ=environ)
    shutdown = trio.Event()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve(app, shutdown, task_status=task_status)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(run)
        try:
            yield Running(bound, app, shutdown, stopped)
        finally:
            shutdown.set()


@asynccontextmanager
async def backend(
    handler: Handler, protocols: frozenset[str] = frozenset({"http1", "h2c"})
) -> AsyncIterator[int]:
    """An upstream on 127.0.0.1:<port> answering with `handler`, served by meshwire's own codecs."""
    stats = ListenerStats(Stats(), "backend")

    async def on_connection(stream: trio.SocketStream) -> None:
        ctx = ConnectionContext(handler, schema.Limits(), stats, peer="backend")
        ctx.protocols = protocols
        with contextlib.suppress(trio.BrokenResourceError):
            await serve_connection(stream, ctx)

    async with raw_backend(on_connection) as port:
        yield port


@asynccontextmanager
async def raw_backend(
    behave: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1:<port> running `behave` per connection, until the block ends."""

    async def on_connection(stream: trio.SocketStream) -> None:
        async with stream:
            await behave(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), on_connection, 0)
        try:
            yield int(listeners[0].socket.getsockname()[1])
        finally:
            nursery.cancel_scope.cancel()


def one_route_config(
    listen_port: int,
    upstream_port: int,
    *,
    upstream_protocol: str = "http1",
    listener_protocols: tuple[str, ...] = ("http1", "h2c"),
    limits: schema.Limits | None = None,
    timeout: float = 15.0,
    drain_timeout: float = 30.0,
    access_log: str | None = None,
) -> schema.Config:
    return schema.Config(
        admin=schema.Admin(address="127.0.0.1:0"),
        drain_timeout=schema.Duration(drain_timeout),
        listeners=[
            schema.Listener(
                name="ingress",
                address=f"127.0.0.1:{listen_port}",
                protocols=list(listener_protocols),  # type: ignore[arg-type]
                limits=limits or schema.Limits(),
                routes=[
                    schema.Route(
                        name="all",
                        match=schema.RouteMatch(prefix="/"),
                        cluster="backend",
                        timeout=schema.Duration(timeout),
                    )
                ],
                access_log=schema.AccessLog(path=access_log) if access_log else None,
            )
        ],
        clusters=[
            schema.Cluster(
                name="backend",
                endpoints=[f"127.0.0.1:{upstream_port}"],
                protocol=upstream_protocol,  # type: ignore[arg-type]
            )
        ],
    )


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    received: int = 0  # body bytes, counted even when the client does not keep them

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H1Client:
    """A keep-alive HTTP/1.1 client on h11, independent of meshwire's codecs."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[H1Client]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            yield cls(stream)

    async def _next(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        hdrs = [("host", "test"), *(headers or [])]
        if body:
            hdrs.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        response = await self._next()
        while isinstance(response, h11.InformationalResponse):
            response = await self._next()
        assert isinstance(response, h11.Response), response
        chunks: list[bytes] = []
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                trailers = list(event.headers)
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return Reply(response.status_code, list(response.headers), b"".join(chunks), trailers)


class H2Client:
    """A prior-knowledge h2c client on the h2 library, one request at a time or many at once."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        allow_streams_after_goaway(self.conn)  # as real clients do, finish streams after GOAWAY
        self.lock = trio.Lock()
        self.replies: dict[int, Reply] = {}
        self.done: dict[int, trio.Event] = {}
        self.resets: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.window_open = trio.Event()
        self.keep_bodies = True  # False: count body bytes only (for very large bodies)

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[H2Client]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, cls.over(stream) as client:
            yield client

    @classmethod
    @asynccontextmanager
    async def over(cls, stream: trio.abc.Stream) -> AsyncIterator[H2Client]:
        """Speak HTTP/2 on an already open stream (e.g. TLS after ALPN chose h2)."""
        client = cls(stream)
        client.conn.initiate_connection()
        await client.flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._reader)
            yield client
            nursery.cancel_scope.cancel()

    async def flush(self) -> None:
        async with self.lock:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                for event in self.done.values():
                    event.set()
                return
            for ev in self.conn.receive_data(data):
                self._on_event(ev)
            await self.flush()

    def _on_event(self, ev: object) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            headers = list(ev.headers)
            status = int(dict(headers)[b":status"])
            self.replies[ev.stream_id] = Reply(
                status, [h for h in headers if not h[0].startswith(b":")], b""
            )
        elif isinstance(ev, h2.events.DataReceived):
            reply = self.replies[ev.stream_id]
            reply.received += len(ev.data)
            if self.keep_bodies:
                reply.body += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.replies[ev.stream_id].trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            self.done[ev.stream_id].set()
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id] = ev.error_code
            if ev.stream_id in self.done:
                self.done[ev.stream_id].set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
        elif isinstance(ev, h2.events.WindowUpdated):
            self.window_open.set()

    async def start(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.done[sid] = trio.Event()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "test")]
        hdrs += headers or []
        self.conn.send_headers(
            sid, [(k.encode(), v.encode()) for k, v in hdrs], end_stream=not body
        )
        await self.flush()
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.window_open = trio.Event()
                await self.window_open.wait()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(chunk), end_stream=not view)
            await self.flush()
        return sid

    async def finish(self, sid: int) -> Reply:
        await self.done[sid].wait()
        if sid in self.resets:
            raise ConnectionResetError(f"stream {sid} reset with code {self.resets[sid]}")
        return self.replies[sid]

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        return await self.finish(await self.start(method, path, headers, body))
