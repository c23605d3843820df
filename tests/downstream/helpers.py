"""Test doubles for the downstream codecs: a recording context, byte readers, an h2 client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import msgspec
import trio
import trio.testing
from hyperframe.frame import Frame

from config.schema import Limits
from proxy.downstream.context import ConnectionContext
from proxy.http.model import BytesBody, Request, Response, read_all
from proxy.stats import ListenerStats, Stats

HandlerFn = Callable[[Request], Awaitable[Response]]


class Recorder:
    """A context whose handler and completion hook record what they saw."""

    def __init__(self, handler: HandlerFn, **limits: object) -> None:
        self.requests: list[Request] = []
        self.completed: list[tuple[Request, int, BaseException | None]] = []
        self.stats = ListenerStats(Stats(), "test")
        self._handler = handler
        self.limits = msgspec.structs.replace(Limits(), **limits)

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return await self._handler(request)

    def on_complete(self, request: Request, status: int, exc: BaseException | None) -> None:
        self.completed.append((request, status, exc))

    def context(self, **kwargs: object) -> ConnectionContext:
        return ConnectionContext(
            self.handle,
            self.limits,
            self.stats,
            peer="10.0.0.1:4321",
            on_complete=self.on_complete,
            **kwargs,  # type: ignore[arg-type]
        )


async def echo(request: Request) -> Response:
    """Read the whole body and send it back, with the request's trailers as response trailers."""
    data = await read_all(request.body, 1 << 24)
    headers = [(b"x-target", request.target), (b"content-length", str(len(data)).encode())]
    return Response(200, headers, BytesBody(data, trailers=request.body.trailers))


async def hello(request: Request) -> Response:
    return Response.text(200, "hi")


def pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    client, server = trio.testing.memory_stream_pair()
    return client, server


async def read_until(stream: trio.abc.Stream, marker: bytes, buf: bytearray | None = None) -> bytes:
    """Receive until `marker` has arrived; returns everything received so far."""
    data = buf if buf is not None else bytearray()
    with trio.fail_after(5):
        while marker not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"EOF before {marker!r}; got {bytes(data)!r}")
            data += chunk
    return bytes(data)


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return bytes(data)


class H2Client:
    """A real client-side H2Connection over a memory stream, collecting server events."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.events: list[h2.events.Event] = []
        self.eof = False

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def request(
        self, sid: int, method: bytes = b"GET", path: bytes = b"/", *, end: bool = True, extra=()
    ) -> None:
        headers = [
            (b":method", method),
            (b":path", path),
            (b":scheme", b"http"),
            (b":authority", b"example.com"),
            *extra,
        ]
        self.conn.send_headers(sid, headers, end_stream=end)
        await self.flush()

    async def pump(self) -> None:
        """Receive one batch of bytes from the server and record its events."""
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            return
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived) and event.stream_id in self.conn.streams:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        await self.flush()

    async def wait_for(self, predicate: Callable[[h2.events.Event], bool]) -> h2.events.Event:
        with trio.fail_after(5):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.eof:
                    raise AssertionError(f"EOF; events so far {self.events!r}")
                await self.pump()

    async def wait_eof(self) -> None:
        with trio.fail_after(5):
            while not self.eof:
                await self.pump()

    async def response(self, sid: int) -> tuple[dict[bytes, bytes], bytes, list[h2.events.Event]]:
        """Wait for the stream to end; returns (headers, body, that stream's events)."""
        await self.wait_for(
            lambda e: (
                isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) and e.stream_id == sid
            )
        )
        mine = [e for e in self.events if getattr(e, "stream_id", None) == sid]
        headers: dict[bytes, bytes] = {}
        body = bytearray()
        for e in mine:
            if isinstance(e, h2.events.ResponseReceived):
                headers = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
        return headers, bytes(body), mine


def raw_frame(kind: int, stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    """One HTTP/2 frame built by hand (RFC 9113 §4.1), whatever h2 would refuse to send."""
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags])
    return header + stream_id.to_bytes(4, "big") + payload


def parse_frames(data: bytes) -> list[Frame]:
    """Split raw server bytes into hyperframe frames (for when the h2 client has stopped)."""
    frames: list[Frame] = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break  # the rest has not arrived yet
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds (at most five seconds)."""
    with trio.fail_after(5):
        while not condition():
            await trio.testing.wait_all_tasks_blocked()
