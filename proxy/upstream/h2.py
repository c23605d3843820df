"""HTTP/2 client connections (h2): multiplexed streams, one reader task, flow-controlled I/O."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from proxy.h2compat import allow_streams_after_goaway
from proxy.h2tuning import LeanEncoder, lean_config
from proxy.http.errors import ProxyError, UpstreamProtocolError, UpstreamRemoteReset, UpstreamReset
from proxy.http.model import Headers, Request, Response
from proxy.upstream.connect import close_quietly
from proxy.upstream.h2stream import (
    H2Body,
    H2Stream,
    H2Upload,
    request_headers,
    trailer_fields,
)
from proxy.upstream.outgoing import Outgoing, RetryableReset

if TYPE_CHECKING:
    from proxy.upstream.balancer import Host
    from proxy.upstream.pool import H2Pool

RECV_SIZE = 65536
STREAM_WINDOW = 262144
CONNECTION_WINDOW = 16 * 1024 * 1024
_IO_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# h2 raises these when a stream or the connection is already gone.
H2_ERRORS = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)
log = logging.getLogger("meshwire.upstream")


def final_status(value: bytes) -> int:
    """A final response's :status as an int, or 0 when it is not three digits from 200 to 599."""
    if len(value) == 3 and value.isdigit() and b"200" <= value <= b"599":
        return int(value)
    return 0


class H2ClientConnection:
    """One HTTP/2 connection to a host; streams are opened synchronously by the pool."""

    __slots__ = (
        "_lock",
        "_nursery",
        "_pending",
        "_reader_scope",
        "_window_event",
        "_writer_scheduled",
        "authority",
        "closed",
        "error",
        "goaway",
        "h2",
        "host",
        "idle_since",
        "max_streams",
        "pool",
        "scheme",
        "stream",
        "streams",
        "write_timeout",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        host: Host,
        pool: H2Pool,
        nursery: trio.Nursery,
        *,
        tls: bool,
        max_streams: int,
        write_timeout: float,
    ) -> None:
        self.stream = stream
        self.host = host
        self.pool = pool
        self._nursery = nursery
        self.scheme = b"https" if tls else b"http"
        self.authority = host.address.encode()
        self.max_streams = max_streams
        self.write_timeout = write_timeout
        self.h2 = h2.connection.H2Connection(config=lean_config(client_side=True))
        self.h2.encoder = LeanEncoder()
        allow_streams_after_goaway(self.h2)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0,
            },
        )
        self.streams: dict[int, H2Stream] = {}
        self.error: ProxyError | None = None
        self.goaway = False
        self.closed = False
        self.idle_since = trio.current_time()
        self._lock = trio.Lock()
        self._pending = b""
        self._writer_scheduled = False
        self._window_event = trio.Event()
        self._reader_scope = trio.CancelScope()

    async def start(self) -> None:
        """Send the preface and start the reader task in the pool's nursery."""
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._nursery.start_soon(self._reader)
        await self.flush()

    # --- stream capacity, decided synchronously by the pool ---------------------------------

    def available(self) -> bool:
        if self.closed or self.goaway or self.error is not None:
            return False
        limit = min(self.max_streams, self.h2.remote_settings.max_concurrent_streams)
        return len(self.streams) < limit

    def open_stream(self, request: Request, out: Outgoing) -> H2Stream:
        """Send the request's HEADERS (and as much of an in-memory body as the window allows).

        Synchronous on purpose: stream ids must go on the wire in increasing order."""
        h = self.h2
        sid = h.get_next_available_stream_id()
        stream = H2Stream(sid)
        data = out.data
        headers = request_headers(request, self.scheme, self.authority)
        h.send_headers(sid, headers, end_stream=data == b"" and not out.trailers)
        self.streams[sid] = stream
        if data is None:
            stream.upload = H2Upload(self, stream, b"", out.stream, None)
        elif data or out.trailers:
            sent = self._queue_data(sid, data)
            if sent < len(data):
                stream.upload = H2Upload(self, stream, data[sent:], None, out.trailers)
            elif out.trailers:
                h.send_headers(sid, trailer_fields(out.trailers), end_stream=True)
            else:
                h.end_stream(sid)
        return stream

    def _queue_data(self, sid: int, data: bytes) -> int:
        """Queue DATA frames up to the flow-control window; the number of bytes queued."""
        h = self.h2
        window = min(h.local_flow_control_window(sid), len(data))
        frame = h.max_outbound_frame_size
        sent = 0
        while sent < window:
            n = min(frame, window - sent)
            h.send_data(sid, data[sent : sent + n])
            sent += n
        return sent

    async def exchange(self, stream: H2Stream) -> Response:
        """Flush the request head, start its upload, wait for the response head."""
        try:
            await self.flush()
            if stream.upload is not None:
                self._nursery.start_soon(stream.upload.run)
            while stream.headers is None:
                if stream.error is not None:
                    raise stream.error
                await stream.wait()
        except BaseException as exc:
            await self.finish(stream, error=not isinstance(exc, trio.Cancelled))
            raise
        length: int | None = None
        if stream.ended and not stream.chunks and stream.trailers is None:
            length = 0  # END_STREAM rode on HEADERS: a gRPC trailers-only reply must stay one
        else:
            for name, value in stream.headers:
                if name == b"content-length":
                    length = int(value)
                    break
        return Response(stream.status, stream.headers, H2Body(self, stream, length))

    # --- writing ------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything queued; waits for the write lock (the upload's backpressure)."""
        if self.error is not None:
            raise self.error
        async with self._lock:
            await self._drain()

    async def nudge(self) -> None:
        """Write queued control frames unless a writer holding the lock will do it anyway."""
        if not self._lock.locked() and self.error is None:
            async with self._lock:
                await self._drain()

    async def _drain(self) -> None:
        # Whoever holds the lock writes until nothing is queued, so no one else must wait for it
        # to get their bytes out. The write is shielded: a cancelled frame would corrupt the
        # connection for every stream on it.
        while True:
            data = self._pending + self.h2.data_to_send()
            self._pending = b""
            if not data:
                return
            with trio.move_on_after(self.write_timeout, shield=True) as scope:
                try:
                    await self.stream.send_all(data)
                except _IO_ERRORS as exc:
                    error = UpstreamReset(f"connection lost while writing: {exc!r}")
                    self._fail(error)
                    raise error from exc
            if scope.cancelled_caught:
                error = UpstreamReset("upstream stopped reading")
                self._fail(error)
                raise error

    async def _write_task(self) -> None:
        try:
            async with self._lock:
                await self._drain()
        except ProxyError:
            pass
        finally:
            self._writer_scheduled = False

    async def send_data(self, stream: H2Stream, data: bytes) -> None:
        """Send one request body chunk, waiting for flow-control credit as needed."""
        while data:
            if self.error is not None:
                raise self.error
            if stream.finished or stream.error is not None:
                raise UpstreamReset("stream closed")
            if self.h2.local_flow_control_window(stream.id) <= 0:
                await self._window_event.wait()
                continue
            sent = self._queue_data(stream.id, data)
            data = data[sent:]
            await self.flush()

    def reset(self, stream: H2Stream, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        with contextlib.suppress(*H2_ERRORS):
            self.h2.reset_stream(stream.id, code)

    # --- reading ------------------------------------------------------------------------------

    async def _reader(self) -> None:
        error: ProxyError = UpstreamReset("connection closed")
        try:
            with self._reader_scope:
                while True:
                    try:
                        data = await self.stream.receive_some(RECV_SIZE)
                    except _IO_ERRORS as exc:
                        error = UpstreamReset(f"connection lost: {exc!r}")
                        return
                    if not data:
                        error = UpstreamReset("upstream closed the connection")
                        return
                    try:
                        events = self.h2.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        error = UpstreamProtocolError(f"HTTP/2 protocol error: {exc}")
                        return
                    try:
                        for event in events:
                            self._dispatch(event)
                    except Exception as exc:  # an upstream's bytes must never end the process
                        log.warning("upstream HTTP/2 event not handled: %r", exc)
                        error = UpstreamProtocolError(f"unhandled upstream event: {exc!r}")
                        return
                    queued = self.h2.data_to_send()
                    if queued:
                        self._pending += queued
                        if not self._lock.locked() and not self._writer_scheduled:
                            self._writer_scheduled = True
                            self._nursery.start_soon(self._write_task)
                    if self.goaway and not self.streams:
                        return
        finally:
            await self.close(error)

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            sid, flow = event.stream_id or 0, event.flow_controlled_length or 0
            stream = self.streams.get(sid)
            if stream is None or stream.finished:
                self.h2.acknowledge_received_data(flow, sid)
            else:
                stream.chunks.append((event.data or b"", flow))
                stream.wake()
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                headers: Headers = []
                status = 0
                for name, value in event.headers or ():
                    if name == b":status":
                        status = final_status(value)
                    elif name[:1] != b":":
                        headers.append((bytes(name), bytes(value)))
                if not status:
                    # RFC 9113 §8.3.2 and §8.1.1: a final :status is three digits, 2xx to 5xx;
                    # anything else is a malformed response (a stream error, a 502 here).
                    stream.fail(UpstreamProtocolError("malformed :status in the response"))
                    self.reset(stream, ErrorCodes.PROTOCOL_ERROR)
                    return
                stream.status = status
                stream.headers = headers
                stream.wake()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.ended = True
                stream.wake()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.trailers = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                code = event.error_code
                if code == ErrorCodes.REFUSED_STREAM:
                    stream.fail(RetryableReset("upstream refused the stream"))
                else:
                    stream.fail(UpstreamRemoteReset(f"upstream reset the stream: {code!r}"))
                self._wake_writers()
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake_writers()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._wake_writers()
            self.pool.wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event.last_stream_id or 0, event.error_code or 0)

    def _goaway(self, last_stream_id: int, error_code: int) -> None:
        self.goaway = True
        graceful = error_code == ErrorCodes.NO_ERROR
        for sid, stream in self.streams.items():
            if sid > last_stream_id:
                # Never processed by the peer (RFC 9113 §6.8): safe to retry elsewhere.
                stream.fail(RetryableReset("stream refused by GOAWAY"))
            elif not graceful:
                stream.fail(UpstreamRemoteReset(f"upstream sent GOAWAY: {error_code!r}"))
        self._wake_writers()
        self.pool.wake()

    def _wake_writers(self) -> None:
        event, self._window_event = self._window_event, trio.Event()
        event.set()

    # --- teardown -----------------------------------------------------------------------------

    def _fail(self, error: ProxyError) -> None:
        """A connection-level failure fails every stream on it (sticky)."""
        if self.error is None:
            self.error = error
        for stream in self.streams.values():
            stream.fail(self.error)
        self._wake_writers()
        self._reader_scope.cancel()

    async def finish(self, stream: H2Stream, error: bool) -> None:
        """The consumer is done with `stream`: reset it if still open, return unread credit."""
        if stream.finished:
            return
        stream.finished = True
        upload = stream.upload
        if upload is not None:
            upload.scope.cancel()
        if self.error is None:
            state = self.h2.streams.get(stream.id)
            if state is not None and not state.closed:
                self.reset(stream)
            unread = sum(flow for _, flow in stream.chunks)
            stream.chunks.clear()
            if unread:
                self.h2.acknowledge_received_data(unread, stream.id)
        del self.streams[stream.id]
        self.host.end(error)
        if not self.streams:
            self.idle_since = trio.current_time()
            if self.goaway:
                self._reader_scope.cancel()
        self.pool.wake()
        if self.error is None:
            with trio.CancelScope(shield=True), contextlib.suppress(ProxyError):
                await self.nudge()

    async def close(self, error: ProxyError | None = None) -> None:
        """Fail every stream, stop the reader and close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._fail(error or UpstreamReset("connection closed"))
        self.pool.forget(self)
        await close_quietly(self.stream)

    async def aclose(self) -> None:
        """Graceful close: GOAWAY (best effort), then close."""
        if not self.closed and self.error is None:
            try:
                self.h2.close_connection()
                with trio.move_on_after(0.1, shield=True):
                    await self.nudge()
            except (ProxyError, *H2_ERRORS):
                pass
        await self.close()
