"""HTTP/1.1 server codec: a keep-alive loop over a sans-I/O parser, pulled request bodies and
coalesced writes."""

from __future__ import annotations

import contextlib
import math
import sys
from functools import partial
from typing import cast

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
from proxy.http.model import EmptyBody, Headers, Request, Response
from proxy.http.rescue import error_response
from proxy.http1 import writer
from proxy.http1.events import NEED_DATA, Data, EndOfMessage, ProtocolError, RequestHead
from proxy.quick_socket import QuickStream

MAX_RECV = 65536
COALESCE_LIMIT = 65536  # known-length bodies up to this size leave with the head in one write
DRAIN_LIMIT = 262144  # unread request body we swallow to keep the connection reusable
CHUNK_COST = 64  # data bytes that pay for one chunk of a chunked request body

_CLOSE = (b"connection", b"close")


class H1Body:
    """A request body read straight off the connection, one parser event per chunk."""

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
    __slots__ = (
        "ctx",
        "ended",
        "expect",
        "fd",
        "head",
        "idle",
        "must_close",
        "parser",
        "request",
        "scope",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, ctx: ConnectionContext) -> None:
        self.stream = stream
        self.ctx = ctx
        limits = ctx.limits
        self.parser = ctx.codec.request_parser(limits.max_header_bytes, limits.max_headers)
        # The connection's one cancel scope: a keep-alive wait moves its deadline, and eviction,
        # draining or a client's hang-up during a handler cancel it (each ends the connection),
        # so no request pays for a scope of its own.
        self.scope = trio.CancelScope()
        self.idle = False  # waiting for a request's first bytes
        # The socket a hang-up sweeper may peek at (plain TCP only; TLS records hide the EOF).
        self.fd = -1
        if ctx.hangup is not None and isinstance(stream, (QuickStream, trio.SocketStream)):
            self.fd = stream.socket.fileno()
        self.must_close = False
        self.request: Request | None = None
        self.head: RequestHead | None = None
        self.ended = True  # the request's body has been read to its end
        self.expect = False  # the client waits for 100 Continue before sending the body

    async def run(self, initial: bytes) -> None:
        if initial:
            self.parser.feed(initial)
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_draining)
                try:
                    while await self._cycle():
                        pass
                except PEER_GONE:
                    self.ctx.stats.cx_destroy_remote.inc()
                finally:
                    nursery.cancel_scope.cancel()

    async def _watch_draining(self) -> None:
        # One watcher per connection wakes an idle wait when the server starts draining, so the
        # per-request path needs no extra task.
        await self.ctx.draining.wait()
        if self.idle:
            self.scope.cancel()

    # --- request head ------------------------------------------------------------------------

    async def _cycle(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        self.must_close = False
        self.request = None
        try:
            head = await self._next_head()
        except ProtocolError as exc:
            self.ctx.stats.cx_protocol_error.inc()
            err = HeadersTooLarge(str(exc)) if exc.status == 431 else BadRequest(str(exc))
            await self._send_error(err)
            return False
        if head is None:
            return False
        return await self._exchange(head)

    async def _next_head(self) -> RequestHead | None:
        parser = self.parser
        event = parser.next_event()
        if event is NEED_DATA:
            if not parser.buffer:
                data = await self._receive_idle()
                if data is None:
                    return None
                parser.feed(data)
                event = parser.next_event()
            if event is NEED_DATA:
                head = await self._receive_head()
                if head is None:
                    self.ctx.stats.rq_timeout.inc()
                    await self._send_error(RequestTimeout("request headers not received in time"))
                return head
        return event if type(event) is RequestHead else None  # CLOSED: gone between requests

    async def _receive_idle(self) -> bytes | None:
        """Wait for the first bytes of a request; None when draining. Idle too long or evicted,
        the connection's scope is cancelled and the connection ends."""
        ctx = self.ctx
        if ctx.draining.is_set():
            return None
        idle = ctx.idle
        scope = self.scope
        scope.deadline = idle.deadline(ctx.limits.idle_timeout)
        idle.watch(scope)
        self.idle = True
        try:
            return cast(bytes, await self.stream.receive_some(MAX_RECV))
        finally:
            self.idle = False
            idle.close(scope)
            scope.deadline = math.inf

    async def _receive_head(self) -> RequestHead | None:
        """Once a head has begun, all of it must arrive within header_read_timeout (slowloris)."""
        parser = self.parser
        with trio.move_on_after(self.ctx.limits.header_read_timeout or math.inf):
            while True:
                parser.feed(cast(bytes, await self.stream.receive_some(MAX_RECV)))
                event = parser.next_event()
                if event is not NEED_DATA:
                    return event if type(event) is RequestHead else None
        return None

    # --- one exchange ------------------------------------------------------------------------

    async def _exchange(self, head: RequestHead) -> bool:
        ctx = self.ctx
        request = new_request(
            ctx,
            head.method,
            head.target,
            head.headers,
            EmptyBody(),
            head.authority,
            "1.1" if head.version == b"1.1" else "1.0",
        )
        self.request = request
        self.head = head
        self.expect = head.expect_continue
        length = head.length
        if length == 0:
            self.parser.next_event()  # the EndOfMessage of a bodiless request
            self.ended = True
            self.expect = False  # nothing to wait for: the whole request is here
        else:
            self.ended = False
            request.body = H1Body(self, length, ctx.limits.h1_chunk_budget)
        stats = ctx.stats
        stats.rq_total.inc()
        stats.rq_active.inc()
        try:
            if self.fd >= 0 and length == 0:
                response = await self._call_watched(request)
            else:
                response = await call_handler(ctx, request)
            return await self._respond(request, head, response)
        finally:
            stats.rq_active.dec()

    async def _call_watched(self, request: Request) -> Response:
        """The handler's response; a client that hangs up before it is ready cancels the
        connection (its request is recorded as 499 on the way out)."""
        hangup = self.ctx.hangup
        assert hangup is not None
        hangup.watch(self.fd, self.scope)
        try:
            return await call_handler(self.ctx, request)
        except trio.Cancelled:
            if self.scope.cancel_called:
                gone = DownstreamDisconnect("client closed the connection during the request")
                self._failed(request, 499, gone)
            raise
        finally:
            hangup.unwatch(self.fd)

    async def read_body(self, body: H1Body) -> bytes:
        parser = self.parser
        try:
            if self.expect:
                self.expect = False
                await self.stream.send_all(writer.CONTINUE)
            while True:
                event = parser.next_event()
                if type(event) is Data:
                    data = event.data
                    if self.request is not None:
                        self.request.info.bytes_received += len(data)
                    body.credit += len(data)
                    body.received += len(data)
                    if event.chunk_start:
                        body.credit -= CHUNK_COST
                        if body.credit < 0:
                            raise BadRequest("too many chunks for the data (h1_chunk_budget)")
                    return data
                if type(event) is EndOfMessage:
                    body.done = self.ended = True
                    body.trailers = event.trailers
                    return b""
                deadline = body_deadline(self.ctx.limits, body)
                if deadline == math.inf:
                    received = cast(bytes, await self.stream.receive_some(MAX_RECV))
                else:
                    with trio.CancelScope(deadline=deadline) as scope:
                        received = cast(bytes, await self.stream.receive_some(MAX_RECV))
                    if scope.cancelled_caught:
                        self.ctx.stats.rq_timeout.inc()
                        raise StreamIdleTimeout(
                            "request body stalled (body_idle_timeout, min_body_rate)"
                        )
                if not received:
                    raise DownstreamDisconnect("client closed during the request body")
                parser.feed(received)
        except ProtocolError as exc:
            self.must_close = body.done = True
            raise BadRequest(str(exc)) from None
        except PEER_GONE:
            self.must_close = body.done = True
            raise DownstreamDisconnect("client connection lost during the request body") from None
        except ProxyError:
            self.must_close = body.done = True
            raise

    # --- response ----------------------------------------------------------------------------

    async def _respond(self, request: Request, head: RequestHead, response: Response) -> bool:
        status = response.status
        body = response.body
        headers = [h for h in response.headers if h[0] not in HOP_BY_HOP]
        if self.must_close or self.expect or self.ctx.draining.is_set():
            headers.append(_CLOSE)
        out = b""
        try:
            out, framing, keep_alive = writer.response(
                status,
                REASONS.get(status, b""),
                headers,
                request.method,
                head.version,
                head.keep_alive,
            )
            if framing.mode == writer.NONE or status in (204, 304):
                await body.aclose()
                await self._send(request, out + framing.end())
            elif body.length is not None and body.length <= COALESCE_LIMIT:
                while chunk := await body.read():
                    out += framing.data(chunk)
                out += framing.end(self._trailers(body.trailers, framing))
                await self._send(request, out)
            else:
                await self._send(request, out)
                out = b""
                while chunk := await body.read():
                    await self._send(request, framing.data(chunk))
                await self._send(request, framing.end(self._trailers(body.trailers, framing)))
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
        if not keep_alive or self.must_close:
            return False
        if not self.ended:
            return await self._drain_request()
        return True

    @staticmethod
    def _trailers(trailers: Headers | None, framing: writer.BodyWriter) -> Headers | None:
        if trailers and framing.mode == writer.CHUNKED:
            return [h for h in trailers if h[0] not in HOP_BY_HOP]
        return None

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
        parser = self.parser
        left = DRAIN_LIMIT
        with trio.move_on_after(self.ctx.limits.header_read_timeout or math.inf):
            try:
                while left >= 0:
                    event = parser.next_event()
                    if type(event) is Data:
                        # Each chunk costs like CHUNK_COST bytes: tiny chunks end the drain early.
                        left -= len(event.data) + (CHUNK_COST if event.chunk_start else 0)
                    elif type(event) is EndOfMessage:
                        self.ended = True
                        return True
                    else:
                        data = cast(bytes, await self.stream.receive_some(MAX_RECV))
                        if not data:
                            return False
                        parser.feed(data)
            except (ProtocolError, *PEER_GONE):
                return False
        return False

    async def _send_error(self, err: ProxyError) -> None:
        """Answer a request we cannot serve with a rendered error and `Connection: close`."""
        request = self.request or new_request(self.ctx, b"", b"", [], EmptyBody(), b"", "1.1")
        response = error_response(err, request.info)
        response.headers.append(_CLOSE)
        status = response.status
        try:
            out, framing, _ = writer.response(
                status, REASONS.get(status, b""), response.headers, b"", b"1.1", True
            )
            out += framing.data(await response.body.read()) + framing.end()
            await self._send(request, out)
        except (writer.WriteError, *PEER_GONE):
            pass
        complete(self.ctx, request, status, None)


async def run_h1(stream: trio.abc.Stream, ctx: ConnectionContext, initial: bytes = b"") -> None:
    """Serve HTTP/1.x until the connection ends; closes the stream, never raises for the peer."""
    await run_guarded(partial(_H1Server(stream, ctx).run, initial), stream, ctx)


async def serve_h1(stream: trio.abc.Stream, ctx: ConnectionContext, initial: bytes = b"") -> None:
    """Serve one HTTP/1.x connection, counting it in the listener's connection stats."""
    with counted_connection(ctx.stats):
        await run_h1(stream, ctx, initial)
