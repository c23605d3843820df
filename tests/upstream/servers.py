"""Tiny upstream servers (h11 and h2 on trio) for the upstream tests, scriptable per request."""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import trio

Handler = Callable[["H1Exchange"], Awaitable[None]]
H2Handler = Callable[["H2Exchange"], Awaitable[None]]


# --- HTTP/1.1 -----------------------------------------------------------------------------------


class H1Exchange:
    """One request as the server handler sees it."""

    def __init__(self, server: H1Server, conn_id: int, stream: trio.abc.Stream, h: h11.Connection):
        self.server = server
        self.conn_id = conn_id
        self.stream = stream
        self.h = h
        self.request: h11.Request
        self.trailers: list[tuple[bytes, bytes]] = []
        self.close_after = False  # close the socket after the response, without telling the client
        self.aborted = False

    @property
    def target(self) -> bytes:
        return self.request.target

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.request.headers:
            if key == name:
                return bytes(value)
        return None

    async def _next(self) -> Any:
        while True:
            event = self.h.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.h.receive_data(bytes(data))
                continue
            return event

    async def chunk(self) -> bytes | None:
        """Next request body chunk, None at the end."""
        if self.h.their_state is not h11.SEND_BODY:
            return None
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
                return None
            else:
                raise AssertionError(event)

    async def body(self) -> bytes:
        parts = []
        while (c := await self.chunk()) is not None:
            parts.append(c)
        return b"".join(parts)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.stream.send_all(self.h.send(h11.Response(status_code=status, headers=headers)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(self.h.send(h11.Data(data=data)))

    async def end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self.stream.send_all(self.h.send(h11.EndOfMessage(headers=trailers or [])))

    async def respond(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        hdrs = [*(headers or []), (b"content-length", str(len(body)).encode())]
        await self.start(status, hdrs)
        if body:
            await self.send(body)
        await self.end()

    async def abort(self) -> None:
        self.aborted = True
        await trio.aclose_forcefully(self.stream)


async def default_h1(ex: H1Exchange) -> None:
    body = await ex.body()
    await ex.respond(
        200, b"%s %s %s" % (ex.request.method, ex.target, body), [(b"x-conn", b"%d" % ex.conn_id)]
    )


class H1Server:
    """Counts connections and requests; runs `handler` for each request."""

    def __init__(self, handler: Handler = default_h1) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.targets: list[bytes] = []
        self.closed = 0
        self.port = 0
        self.changed = trio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(10):
            while not predicate():
                await self.changed.wait()

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn_id = self.connections
        self._changed()
        h = h11.Connection(h11.SERVER)
        try:
            while True:
                ex = H1Exchange(self, conn_id, stream, h)
                try:
                    event = await ex._next()
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    h11.RemoteProtocolError,
                ):
                    return
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request), event
                ex.request = event
                self.requests += 1
                self.targets.append(event.target)
                self._changed()
                await self.handler(ex)
                if ex.aborted or ex.close_after:
                    return
                if h.their_state is h11.SEND_BODY:
                    await ex.body()
                if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                    return
                h.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            self.closed += 1
            self._changed()


@contextlib.asynccontextmanager
async def h1_server(handler: Handler = default_h1) -> AsyncIterator[H1Server]:
    server = H1Server(handler)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


# --- HTTP/2 -------------------------------------------------------------------------------------


class H2Exchange:
    """One server-side stream."""

    def __init__(self, conn: H2ServerConnection, stream_id: int, headers: list[Any]) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.headers = [(bytes(k), bytes(v)) for k, v in headers]
        self.trailers: list[tuple[bytes, bytes]] = []
        send, self._recv = trio.open_memory_channel[tuple[bytes, int] | None](1000)
        self._send = send

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def chunk(self) -> bytes | None:
        """Next request body chunk (its flow-control credit is returned now), None at the end."""
        item = await self._recv.receive()
        if item is None:
            self._recv.close()
            return None
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.h.acknowledge_received_data(item[1], self.stream_id)
            await self.conn.flush()
        return item[0]

    async def body(self) -> bytes:
        parts = []
        while (c := await self.chunk()) is not None:
            parts.append(c)
        return b"".join(parts)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.conn.h.send_headers(self.stream_id, [(b":status", b"%d" % status), *(headers or [])])
        await self.conn.flush()

    async def send(self, data: bytes) -> None:
        await self.conn.send_data(self.stream_id, data)

    async def end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        if trailers:
            self.conn.h.send_headers(self.stream_id, trailers, end_stream=True)
        else:
            self.conn.h.end_stream(self.stream_id)
        await self.conn.flush()

    async def respond(self, status: int, body: bytes = b"", headers: Any = None) -> None:
        await self.start(status, headers)
        if body:
            await self.send(body)
        await self.end()

    async def reset(self, code: int = 2) -> None:
        self.conn.h.reset_stream(self.stream_id, code)
        await self.conn.flush()


async def default_h2(ex: H2Exchange) -> None:
    body = await ex.body()
    await ex.respond(200, b"%s %s" % (ex.header(b":path") or b"", body))


class H2ServerConnection:
    def __init__(self, server: H2Server, stream: trio.abc.Stream, conn_id: int) -> None:
        self.server = server
        self.stream = stream
        self.conn_id = conn_id
        self.h = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.lock = trio.Lock()
        self.window = trio.Event()
        self.exchanges: dict[int, H2Exchange] = {}
        self.active = 0

    async def flush(self) -> None:
        async with self.lock:
            data = self.h.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def send_data(self, sid: int, data: bytes) -> None:
        while data:
            window = min(self.h.local_flow_control_window(sid), self.h.max_outbound_frame_size)
            if window <= 0:
                event = self.window
                await event.wait()
                continue
            self.h.send_data(sid, data[:window])
            data = data[window:]
            await self.flush()

    async def goaway(self, last_stream_id: int) -> None:
        self.h.close_connection(last_stream_id=last_stream_id)
        # h2 refuses to send anything after GOAWAY; RFC 9113 §6.8 lets us finish older streams.
        self.h.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
        await self.flush()

    async def _run_handler(self, ex: H2Exchange) -> None:
        self.active += 1
        self.server.max_active = max(self.server.max_active, self.active)
        self.server._changed()
        try:
            await self.server.handler(ex)
        except (h2.exceptions.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.active -= 1

    async def run(self, nursery: trio.Nursery) -> None:
        self.h.initiate_connection()
        await self.flush()
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                for event in self.h.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        ex = H2Exchange(self, event.stream_id, event.headers)
                        self.exchanges[event.stream_id] = ex
                        self.server.streams.append(event.stream_id)
                        nursery.start_soon(self._run_handler, ex)
                    elif isinstance(event, h2.events.DataReceived):
                        ex = self.exchanges[event.stream_id]
                        ex._send.send_nowait((event.data, event.flow_controlled_length))
                    elif isinstance(event, h2.events.TrailersReceived):
                        self.exchanges[event.stream_id].trailers = [
                            (bytes(k), bytes(v)) for k, v in event.headers
                        ]
                    elif isinstance(event, h2.events.StreamEnded):
                        self.exchanges[event.stream_id]._send.send_nowait(None)
                    elif isinstance(event, h2.events.StreamReset):
                        self.server.resets.append(event.stream_id)
                        self.server._changed()
                    elif isinstance(
                        event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)
                    ):
                        self.window.set()
                        self.window = trio.Event()
                await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError):
            pass


class H2Server:
    def __init__(self, handler: H2Handler = default_h2, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.conns: list[H2ServerConnection] = []
        self.streams: list[int] = []
        self.resets: list[int] = []
        self.max_active = 0
        self.closed = 0
        self.port = 0
        self.changed = trio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(10):
            while not predicate():
                await self.changed.wait()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        if self.ssl_context is not None:
            stream = trio.SSLStream(stream, self.ssl_context, server_side=True)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                await trio.aclose_forcefully(stream)
                return
        self.connections += 1
        conn = H2ServerConnection(self, stream, self.connections)
        self.conns.append(conn)
        self._changed()
        try:
            async with trio.open_nursery() as nursery:
                await conn.run(nursery)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)
            self.closed += 1
            self._changed()


@contextlib.asynccontextmanager
async def h2_server(
    handler: H2Handler = default_h2, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[H2Server]:
    server = H2Server(handler, ssl_context)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()
