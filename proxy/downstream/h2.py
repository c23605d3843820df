"""HTTP/2 server codec: one reader loop, a task per stream, all writes through one locked flush."""

from __future__ import annotations

import math
from functools import partial

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from hyperframe.frame import GoAwayFrame

from proxy.downstream.abuse import AbuseGuard
from proxy.downstream.common import (
    PEER_GONE,
    call_handler,
    complete,
    counted_connection,
    deadline_after,
    log,
    new_request,
    note_failure,
    run_guarded,
)
from proxy.downstream.context import ConnectionContext
from proxy.downstream.frame_budget import FrameBudget, FrameFlood
from proxy.downstream.h2_stream import H2Body, H2Stream, send_response
from proxy.h2compat import allow_streams_after_goaway
from proxy.h2tuning import LeanEncoder, lean_config
from proxy.http.errors import DownstreamDisconnect, HeadersTooLarge
from proxy.http.model import Body, EmptyBody, Headers
from proxy.http.rescue import error_response

MAX_RECV = 65536
CONNECTION_WINDOW = 1 << 20
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x7, 0xB
_S = h2.settings.SettingCodes
# PINGs, and ACKs nobody asked for (we send no PING, and one SETTINGS), cost like SETTINGS.
_CONTROL = (h2.events.PingReceived, h2.events.PingAckReceived, h2.events.SettingsAcknowledged)


def _settings(ctx: ConnectionContext, max_streams: int) -> h2.settings.Settings:
    limits = ctx.limits
    return h2.settings.Settings(
        client=False,
        initial_values={
            _S.MAX_CONCURRENT_STREAMS: max_streams,
            _S.HEADER_TABLE_SIZE: limits.hpack_table_size,
            _S.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
        },
    )


class H2Server:
    """The state of one HTTP/2 connection; stream tasks call back into flush/acknowledge/reset."""

    def __init__(self, stream: trio.abc.Stream, ctx: ConnectionContext) -> None:
        self.stream = stream
        self.ctx = ctx
        conn = h2.connection.H2Connection(config=lean_config(client_side=False))
        conn.encoder = LeanEncoder()
        conn.local_settings = _settings(ctx, ctx.limits.max_concurrent_streams)
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        # h2 treats a HEADERS beyond the advertised stream limit as a connection error; RFC 9113
        # §5.1.2 allows a stream error, so h2 gets a lax local limit and we send REFUSED_STREAM.
        conn.local_settings = _settings(ctx, 2**31 - 1)
        conn.decoder.max_header_list_size = ctx.limits.max_header_bytes
        conn.decoder.max_allowed_table_size = ctx.limits.hpack_table_size
        self.h2 = conn
        self.streams: dict[int, H2Stream] = {}
        self.guard = AbuseGuard(ctx.limits)
        self.budget = FrameBudget(ctx.limits)
        self.budget.install(conn)
        self.lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        self.recv_scope: trio.CancelScope | None = None
        self.started = trio.current_time()
        self.last_active = self.started
        self.seen_headers = False
        self.goaway_sent = False
        self.broken = False
        self.highest_id = 0

    # --- writing -----------------------------------------------------------------------------

    async def flush(self, extra: bytes = b"") -> None:
        """Send what h2 has queued. Bytes are taken under the lock so frames leave in order."""
        if self.broken:
            return
        lock = self.lock
        if lock.locked():
            await lock.acquire()
            data = self.h2.data_to_send()
        else:
            data = self.h2.data_to_send()
            if not data and not extra:
                return
            lock.acquire_nowait()
        try:
            if extra:
                data += extra
            if data and not self.broken:
                await self._write(data)
        finally:
            lock.release()

    async def _write(self, data: bytes) -> None:
        # Shielded so a cancelled stream task cannot tear a frame; bounded so a peer that stopped
        # reading cannot pin us forever.
        with trio.CancelScope(
            shield=True, deadline=deadline_after(self.ctx.limits.stream_idle_timeout)
        ):
            try:
                await self.stream.send_all(data)
                return
            except PEER_GONE:
                pass
        self.broken = True
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def acknowledge(self, stream_id: int, flow_len: int) -> None:
        """Return flow-control credit for bytes the handler has consumed."""
        self.h2.acknowledge_received_data(flow_len, stream_id)
        await self.flush()

    async def reset(self, stream_id: int, code: int) -> None:
        if self._reset_now(stream_id, code):
            await self.flush()

    def _reset_now(self, stream_id: int, code: int) -> bool:
        """Queue RST_STREAM unless h2 has closed the stream (or the connection); True if queued."""
        # A peer's RST_STREAM in the same read as its HEADERS closes the stream inside h2 before
        # we act on the request (StreamClosedError): that concerns this stream only.
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            return False
        return True

    async def goaway(self) -> None:
        """Graceful GOAWAY: new streams are refused, open ones finish.

        Written by hand because h2's close_connection() moves its state machine to CLOSED and
        would then refuse to send anything more for the streams still open.
        """
        if self.goaway_sent:
            return
        self.goaway_sent = True
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.highest_id
        frame.error_code = NO_ERROR
        await self.flush(frame.serialize())
        self._update_deadline()

    # --- reading -----------------------------------------------------------------------------

    async def run(self, initial: bytes) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._watch_draining)
            try:
                await self._read_loop(initial)
            except PEER_GONE:
                self.ctx.stats.cx_destroy_remote.inc()
            finally:
                nursery.cancel_scope.cancel()

    async def _watch_draining(self) -> None:
        await self.ctx.draining.wait()
        await self.goaway()

    def _deadline(self) -> float:
        if self.streams:
            return math.inf
        if self.goaway_sent:
            return -math.inf
        limits = self.ctx.limits
        scale = self.ctx.idle.scale()  # past overload_threshold, idle connections go sooner
        if not self.seen_headers:
            timeout = limits.header_read_timeout
            return self.started + timeout * scale if timeout > 0 else math.inf
        timeout = limits.idle_timeout
        return self.last_active + timeout * scale if timeout > 0 else math.inf

    def _update_deadline(self) -> None:
        scope = self.recv_scope
        if scope is not None:
            scope.deadline = self._deadline()
            if not self.streams:
                self.ctx.idle.watch(scope)  # the last stream ended while the reader waits

    async def _read_loop(self, initial: bytes) -> None:
        conn = self.h2
        data: bytes | bytearray = initial
        while True:
            if data:
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self.ctx.stats.cx_protocol_error.inc()
                    if isinstance(exc, FrameFlood):
                        log.info("closing HTTP/2 connection from %s: %s", self.ctx.peer, exc)
                    else:
                        log.debug("HTTP/2 protocol error from %s: %s", self.ctx.peer, exc)
                    await self.flush()  # h2 has queued its GOAWAY
                    return
                for event in events:
                    try:
                        if self._dispatch(event):
                            return
                    except h2.exceptions.ProtocolError as exc:
                        # Whatever h2 refuses here is a connection error: GOAWAY, one quiet line.
                        self.ctx.stats.cx_protocol_error.inc()
                        log.debug("HTTP/2 connection error with %s: %r", self.ctx.peer, exc)
                        conn.close_connection(error_code=PROTOCOL_ERROR)
                        await self.flush()
                        return
                    if self.guard.tripped:
                        self.ctx.stats.cx_protocol_error.inc()
                        log.info(
                            "closing HTTP/2 connection from %s: %s",
                            self.ctx.peer,
                            self.guard.tripped,
                        )
                        conn.close_connection(error_code=ENHANCE_YOUR_CALM)
                        await self.flush()
                        return
                await self.flush()
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self.recv_scope = scope
                if not self.streams:
                    # Idle: at max_connections the listener may close this one for a new one
                    # (cancelling the scope takes the deadline path: GOAWAY).
                    self.ctx.idle.watch(scope)
                data = await self.stream.receive_some(MAX_RECV)
            self.recv_scope = None
            if not self.streams:  # streams only end during a wait: none open, it was watched
                self.ctx.idle.close(scope)
            if scope.cancelled_caught:
                if self.streams:
                    data = b""
                    continue
                if not self.goaway_sent:
                    conn.close_connection(error_code=NO_ERROR)
                    await self.flush()
                return
            if not data:
                return

    def _dispatch(self, event: h2.events.Event) -> bool:
        """Apply one event; True when the connection must end now."""
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.StreamEnded):
            st = self.streams.get(event.stream_id)
            if st is not None and st.body is not None:
                st.body.end()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for st in self.streams.values():
                    st.window.set()
            elif (st := self.streams.get(event.stream_id)) is not None:
                st.window.set()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            st = self.streams.get(event.stream_id)
            if st is not None and st.body is not None:
                st.body.trailers = [(n, v) for n, v in event.headers]
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.guard.control_frame(trio.current_time())
            for st in self.streams.values():
                st.window.set()  # INITIAL_WINDOW_SIZE may have grown every stream's window
        elif isinstance(event, _CONTROL):
            self.guard.control_frame(trio.current_time())
        elif isinstance(event, h2.events.ConnectionTerminated):
            if event.error_code != NO_ERROR or not self.streams:
                return True
            # A graceful peer GOAWAY: no new streams will come; let the open ones finish.
            allow_streams_after_goaway(self.h2)
            self.goaway_sent = True
            self._update_deadline()
        return False

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        flow_len = event.flow_controlled_length
        if not event.data and not event.stream_ended:
            self.guard.empty_frame(trio.current_time())
        st = self.streams.get(sid)
        if st is not None and st.body is not None and not st.body.closed:
            st.request.info.bytes_received += len(event.data)
            st.body.feed(event.data, flow_len)
        elif flow_len:
            self.h2.acknowledge_received_data(flow_len, sid)

    def _on_reset(self, sid: int) -> None:
        self.ctx.stats.rq_reset.inc()
        self.guard.reset(trio.current_time())
        st = self.streams.get(sid)
        if st is not None:
            st.scope.cancel()
            if st.body is not None:
                st.body.fail(DownstreamDisconnect("stream reset by the client"))

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        ctx = self.ctx
        self.seen_headers = True
        if self.goaway_sent or len(self.streams) >= ctx.limits.max_concurrent_streams:
            self.guard.reset(trio.current_time())  # refused streams cost like resets
            self._reset_now(sid, REFUSED_STREAM)
            return
        self.budget.stream_opened()  # refused streams earn no frame budget: they cost us nothing
        self.highest_id = max(self.highest_id, sid)
        method = target = authority = b""
        host: bytes | None = None
        length: int | None = None
        headers: Headers = []
        for name, value in event.headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"host":
                host = value
            elif name == b"content-length" and value.isdigit():
                length = int(value)
            headers.append((name, value))
        h2body = None if event.stream_ended is not None else H2Body(self, sid, length)
        body: Body = h2body if h2body is not None else EmptyBody()
        request = new_request(ctx, method, target, headers, body, authority or host or b"", "2")
        st = H2Stream(sid, request, h2body)
        st.too_many_headers = len(headers) > ctx.limits.max_headers
        self.streams[sid] = st
        assert self.nursery is not None
        self.nursery.start_soon(self._run_stream, st)

    # --- one stream --------------------------------------------------------------------------

    async def _run_stream(self, st: H2Stream) -> None:
        ctx = self.ctx
        request = st.request
        stats = ctx.stats
        stats.rq_total.inc()
        stats.rq_active.inc()
        failure: BaseException | None = None
        try:
            with st.scope:
                if st.too_many_headers:
                    err = HeadersTooLarge(f"more than {ctx.limits.max_headers} headers")
                    response = error_response(err, request.info)
                else:
                    response = await call_handler(ctx, request)
                st.status = response.status
                await send_response(self, st, request, response)
            if st.scope.cancelled_caught:
                failure = DownstreamDisconnect("stream reset by the client")
        except h2.exceptions.ProtocolError:
            failure = DownstreamDisconnect("stream closed while responding")
        except Exception as exc:
            failure = exc
        except BaseException:
            failure = DownstreamDisconnect("connection closed")
            raise
        finally:
            stats.rq_active.dec()
            if failure is not None:
                note_failure(request.info, failure)
            complete(ctx, request, st.status or DownstreamDisconnect.status, failure)
            with trio.CancelScope(shield=True):
                await self._release(st, finished=failure is None)

    async def _release(self, st: H2Stream, finished: bool) -> None:
        del self.streams[st.id]
        if st.body is not None:
            owed = st.body.discard()
            if owed:
                self.h2.acknowledge_received_data(owed, st.id)
            if finished and not st.body.ended:
                # A complete response before the whole request: ask the client to stop sending
                # (RFC 9113 §8.1).
                self._reset_now(st.id, NO_ERROR)
        if not self.streams:
            self.last_active = trio.current_time()
            self._update_deadline()
        await self.flush()


async def run_h2(stream: trio.abc.Stream, ctx: ConnectionContext, initial: bytes = b"") -> None:
    """Serve HTTP/2 until the connection ends; closes the stream, never raises for the peer."""
    await run_guarded(partial(H2Server(stream, ctx).run, initial), stream, ctx)


async def serve_h2(stream: trio.abc.Stream, ctx: ConnectionContext, initial: bytes = b"") -> None:
    """Serve one HTTP/2 connection, counting it in the listener's connection stats."""
    with counted_connection(ctx.stats):
        await run_h2(stream, ctx, initial)
