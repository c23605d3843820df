"""HTTP/1.1 server codec: an h11 keep-alive loop with pulled request bodies and coalesced writes."""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from typing import cast

import h11
import trio

from proxy.downstream.common import (
    HOP_BY_HOP,
    PEER_GONE,
    REASONS,
    body_deadline,
    call_handler,
    complete,
    counted_connection,
    log,
    new_request,
    note_failure,
    run_guarded,
)
from proxy.downstream.context import ConnectionContext
from proxy.http.errors import (
    BadRequest,
    DownstreamDisconnect,
    HeadersTooLarge,
    ProxyError,
    RequestTimeout,
    StreamIdleTimeout,
)
from proxy.http.model import Body, EmptyBody, Headers, Request, Response
from proxy.http.rescue import error_response
from proxy.quick_socket import QuickStream

MAX_RECV = 65536
COALESCE_LIMIT = 65536  # known-length bodies up to this size leave with the head in one write
DRAIN_LIMIT = 262144  # unread request body we swallow to keep the connection reusable
CHUNK_COST = 64  # data bytes that pay for one chunk of a chunked request body

_CLOSE = (b"connection", b"close")
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
_EOM = h11.EndOfMessage()


class H1Body:
    """A request body read straight off the connection, one h11 event per chunk."""

    __slots__ = ("_server", "credit", "done", "due", "length", "received", "trailers")

    def __init__(self, server: _H1Server, length: int | None, budget: int) -> None:
        self._server = server
        self.length = length
        self.trailers: Headers | None = None
        self.done = False
        self.received = 0
        self.due = 0.0  # see body_deadline
        # Bytes of data minus CHUNK_COST per chunk, from an allowance: below zero, the body is
        # mostly chunk framing (limits.h1_chunk_budget).
        self.credit = budget * CHUNK_COST if budget > 0 else sys.maxsize

    async def read(self) -> bytes:
        if self.done:
            return b""
        return await self._server.read_body(self)

    async def aclose(self) -> None:
        self.done = True


class _H1Server:
    __slots__ = ("conn", "ctx", "fd", "idle_scope", "must_close", "request", "stream")

    def __init__(self, stream: trio.abc.Stream, ctx: ConnectionContext) -> None:
        self.stream = stream
        self.ctx = ctx
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=ctx.limits.max_header_bytes
        )
        self.idle_scope: trio.CancelScope | None = None
        # The socket a hang-up sweeper may peek at (plain TCP only; TLS records hide the EOF).
        self.fd = -1
        if ctx.hangup is not None and isinstance(stream, (QuickStream, trio.SocketStream)):
            self.fd = stream.socket.fileno()
        self.must_close = False
        self.request: Request | None = None

    async def run(self, initial: bytes) -> None:
        if initial:
            self.conn.receive_data(initial)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_draining)
            try:
                while await self._cycle():
                    self.conn.start_next_cycle()
            except PEER_GONE:
                self.ctx.stats.cx_destroy_remote.inc()
            finally:
                nursery.cancel_scope.cancel()

    async def _watch_draining(self) -> None:
        # One watcher per connection wakes an idle wait when the server starts draining, so the
        # per-request path needs no extra task.
        await self.ctx.draining.wait()
        if self.idle_scope is not None:
            self.idle_scope.cancel()

    # --- request head ------------------------------------------------------------------------

    async def _cycle(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        self.must_close = False
        self.request = None
        try:
            event = await self._next_head()
        except h11.RemoteProtocolError as exc:
            self.ctx.stats.cx_protocol_error.inc()
            err: ProxyError = (
                HeadersTooLarge(str(exc)) if exc.error_status_hint == 431 else BadRequest(str(exc))
            )
            await self._send_error(err)
            return False
        if event is None:
            return False
        return await self._exchange(event)

    async def _next_head(self) -> h11.Request | None:
        conn = self.conn
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if not conn.trailing_data[0]:
                data = await self._receive_idle()
                if data is None:
                    return None
                conn.receive_data(data)
                event = conn.next_event()
            if event is h11.NEED_DATA:
                head = await self._receive_head()
                if head is None:
                    self.ctx.stats.rq_timeout.inc()
                    await self._send_error(RequestTimeout("request headers not received in time"))
                return head
        if type(event) is h11.Request:
            return event
        return None  # ConnectionClosed: the client hung up between requests

    async def _receive_idle(self) -> bytes | None:
        """Wait for the first bytes of a request; None when idle too long, evicted or draining."""
        ctx = self.ctx
        if ctx.draining.is_set():
            return None
        idle = ctx.idle
        scope = idle.open(ctx.limits.idle_timeout)
        self.idle_scope = scope
        try:
            with scope:
                return cast(bytes, await self.stream.receive_some(MAX_RECV))
        finally:
            idle.close(scope)
            self.idle_scope = None
        return None

    async def _receive_head(self) -> h11.Request | None:
        """Once a head has begun, all of it must arrive within header_read_timeout (slowloris)."""
        conn = self.conn
        with trio.move_on_after(self.ctx.limits.header_read_timeout or float("inf")):
            while True:
                conn.receive_data(cast(bytes, await self.stream.receive_some(MAX_RECV)))
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event if type(event) is h11.Request else None
        return None

    # --- one exchange ------------------------------------------------------------------------

    async def _exchange(self, event: h11.Request) -> bool:
        ctx = self.ctx
        headers: Headers = list(event.headers)
        request = new_request(
            ctx,
            event.method,
            event.target,
            headers,
            EmptyBody(),
            b"",
            "1.1" if event.http_version == b"1.1" else "1.0",
        )
        self.request = request
        if len(headers) > ctx.limits.max_headers:
            ctx.stats.cx_protocol_error.inc()
            await self._send_error(HeadersTooLarge(f"more than {ctx.limits.max_headers} headers"))
            return False
        host = b""
        length: int | None = 0
        framings = 0
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"content-length":
                length = int(value)
                framings |= 1
            elif name == b"transfer-encoding":
                length = None
                framings |= 2
        request.authority = host
        if framings == 3:
            # RFC 9112 §6.1: both framings may be read differently by the next hop (request
            # smuggling); reject, and close since where this request ends is unknowable.
            ctx.stats.cx_protocol_error.inc()
            await self._send_error(BadRequest("both Content-Length and Transfer-Encoding"))
            return False
        if length == 0:
            self.conn.next_event()  # the EndOfMessage of a bodiless request
        else:
            request.body = H1Body(self, length, ctx.limits.h1_chunk_budget)
        stats = ctx.stats
        stats.rq_total.inc()
        stats.rq_active.inc()
        try:
            if self.fd >= 0 and length == 0:
                watched = await self._call_watched(request)
                if watched is None:
                    gone = DownstreamDisconnect("client closed the connection during the request")
                    return self._failed(request, 499, gone)
                response = watched
            else:
                response = await call_handler(ctx, request)
            return await self._respond(request, response)
        finally:
            stats.rq_active.dec()

    async def _call_watched(self, request: Request) -> Response | None:
        """The handler's response, or None when the client hung up before it was ready."""
        hangup = self.ctx.hangup
        assert hangup is not None
        with trio.CancelScope() as scope:
            hangup.watch(self.fd, scope)
            try:
                return await call_handler(self.ctx, request)
            finally:
                hangup.unwatch(self.fd)
        return None

    async def read_body(self, body: H1Body) -> bytes:
        conn = self.conn
        try:
            if conn.they_are_waiting_for_100_continue:
                await self.stream.send_all(conn.send(_CONTINUE))
            while True:
                event = conn.next_event()
                if type(event) is h11.Data:
                    data = bytes(event.data)
                    if self.request is not None:
                        self.request.info.bytes_received += len(data)
                    body.credit += len(data)
                    body.received += len(data)
                    if event.chunk_start:
                        body.credit -= CHUNK_COST
                        if body.credit < 0:
                            raise BadRequest("too many chunks for the data (h1_chunk_budget)")
                    return data
                if type(event) is h11.EndOfMessage:
                    body.done = True
                    body.trailers = list(event.headers) or None
                    return b""
                if event is not h11.NEED_DATA:
                    raise BadRequest("unexpected end of request body")
                with trio.CancelScope(deadline=body_deadline(self.ctx.limits, body)):
                    received = cast(bytes, await self.stream.receive_some(MAX_RECV))
                    if not received:
                        raise DownstreamDisconnect("client closed during the request body")
                    conn.receive_data(received)
                    continue
                self.ctx.stats.rq_timeout.inc()
                raise StreamIdleTimeout("request body stalled (body_idle_timeout, min_body_rate)")
        except h11.RemoteProtocolError as exc:
            self.must_close = body.done = True
            raise BadRequest(str(exc)) from None
        except PEER_GONE:
            self.must_close = body.done = True
            raise DownstreamDisconnect("client connection lost during the request body") from None
        except ProxyError:
            self.must_close = body.done = True
            raise

    # --- response ----------------------------------------------------------------------------

    async def _respond(self, request: Request, response: Response) -> bool:
        conn = self.conn
        status = response.status
        body = response.body
        headers = [h for h in response.headers if h[0] not in HOP_BY_HOP]
        if self.must_close or self.ctx.draining.is_set() or conn.they_are_waiting_for_100_continue:
            headers.append(_CLOSE)
        bodiless = request.method == b"HEAD" or status in (204, 304)
        chunked = (
            not bodiless
            and request.http_version == "1.1"
            and not any(h[0] == b"content-length" for h in headers)
        )
        out = b""
        try:
            out = conn.send(
                h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
            )
            if bodiless:
                await body.aclose()
                await self._send(request, out + conn.send(_EOM))
            elif body.length is not None and body.length <= COALESCE_LIMIT:
                while chunk := await body.read():
                    out += conn.send(h11.Data(data=chunk))
                out += conn.send(self._end(body, chunked))
                await self._send(request, out)
            else:
                await self._send(request, out)
                out = b""
                while chunk := await body.read():
                    await self._send(request, conn.send(h11.Data(data=chunk)))
                await self._send(request, conn.send(self._end(body, chunked)))
        except PEER_GONE as exc:
            await body.aclose()
            return self._failed(request, status, DownstreamDisconnect(str(exc) or "client gone"))
        except Exception as exc:
            # The head may be out already: abort so the client sees a truncated message, never a
            # clean end (no final 0-chunk).
            await body.aclose()
            if out:
                with trio.move_on_after(1):
                    with contextlib.suppress(*PEER_GONE):
                        await self.stream.send_all(out)
            return self._failed(request, status, exc)
        complete(self.ctx, request, status, None)
        if conn.our_state is not h11.DONE:
            return False
        if conn.their_state is h11.SEND_BODY:
            return await self._drain_request()
        return conn.their_state is h11.DONE

    @staticmethod
    def _end(body: Body, chunked: bool) -> h11.EndOfMessage:
        trailers = body.trailers
        if trailers and chunked:
            return h11.EndOfMessage(headers=[h for h in trailers if h[0] not in HOP_BY_HOP])
        return _EOM

    async def _send(self, request: Request, data: bytes) -> None:
        request.info.bytes_sent += len(data)
        await self.stream.send_all(data)

    def _failed(self, request: Request, status: int, exc: Exception) -> bool:
        note_failure(request.info, exc)
        if not isinstance(exc, ProxyError):
            log.warning("response to %s %r failed: %r", request.method, request.target, exc)
        complete(self.ctx, request, status, exc)
        return False

    async def _drain_request(self) -> bool:
        """Swallow a bounded unread request body so the connection can be reused."""
        conn = self.conn
        left = DRAIN_LIMIT
        with trio.move_on_after(self.ctx.limits.header_read_timeout or float("inf")):
            try:
                while left >= 0:
                    event = conn.next_event()
                    if type(event) is h11.Data:
                        # Each chunk costs like CHUNK_COST bytes: tiny chunks end the drain early.
                        left -= len(event.data) + (CHUNK_COST if event.chunk_start else 0)
                    elif type(event) is h11.EndOfMessage:
                        return True
                    elif event is h11.NEED_DATA:
                        data = cast(bytes, await self.stream.receive_some(MAX_RECV))
                        if not data:
                            return False
                        conn.receive_data(data)
                    else:
                        return False
            except (h11.RemoteProtocolError, *PEER_GONE):
                return False
        return False

    async def _send_error(self, err: ProxyError) -> None:
        """Answer a request we cannot serve with a rendered error and `Connection: close`."""
        request = self.request or new_request(self.ctx, b"", b"", [], EmptyBody(), b"", "1.1")
        response = error_response(err, request.info)
        response.headers.append(_CLOSE)
        conn = self.conn
        try:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                out = conn.send(
                    h11.Response(
                        status_code=response.status,
                        headers=response.headers,
                        reason=REASONS.get(response.status, b""),
                    )
                )
                out += conn.send(h11.Data(data=await response.body.read())) + conn.send(_EOM)
                await self._send(request, out)
        except (h11.LocalProtocolError, *PEER_GONE):
            pass
        complete(self.ctx, request, response.status, None)


async def run_h1(stream: trio.abc.Stream, ctx: ConnectionContext, initial: bytes = b"") -> None:
    """Serve HTTP/1.x until the connection ends; closes the stream, never raises for the peer."""
    await run_guarded(partial(_H1Server(stream, ctx).run, initial), stream, ctx)


async def serve_h1(stream: trio.abc.Stream, ctx: ConnectionContext, initial: bytes = b"") -> None:
    """Serve one HTTP/1.x connection, counting it in the listener's connection stats."""
    with counted_connection(ctx.stats):
        await run_h1(stream, ctx, initial)
