"""HTTP/1.1 client connections: one exchange at a time, full duplex, keep-alive aware."""

from __future__ import annotations

import select
from typing import TYPE_CHECKING

import trio

from proxy.http.errors import ProxyError, UpstreamProtocolError, UpstreamReset
from proxy.http.hop_by_hop import strip_hop_by_hop
from proxy.http.model import (
    Body,
    BytesBody,
    EmptyBody,
    Headers,
    Request,
    Response,
)
from proxy.http1 import writer
from proxy.http1.events import NEED_DATA, Data, EndOfMessage, ProtocolError, ResponseHead
from proxy.http1.parse import ResponseParser
from proxy.quick_socket import QuickStream
from proxy.tls.stream import TlsStream
from proxy.upstream.connect import close_quietly
from proxy.upstream.outgoing import Outgoing, RetryableReset

if TYPE_CHECKING:
    from proxy.upstream.balancer import Host
    from proxy.upstream.pool import H1Pool

RECV_SIZE = 65536
_IO_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# Set by us (framing, Host) or meaningless on a new hop.
_REQUEST_DROP = frozenset((b"content-length", b"transfer-encoding", b"host"))
_CHUNKED = (b"transfer-encoding", b"chunked")


def request_headers(request: Request, out: Outgoing, default_host: bytes) -> Headers:
    """The request's headers with exactly one Host and our own framing headers."""
    host: bytes | None = None
    headers: Headers = []
    for item in request.headers:
        name = item[0]
        if name in _REQUEST_DROP:
            if name == b"host" and host is None:
                host = item[1]
            continue
        headers.append(item)
    headers.insert(0, (b"host", host or request.authority or default_host))
    if out.trailers or out.length is None:
        headers.append(_CHUNKED)
    elif out.length or request.method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        headers.append((b"content-length", str(out.length).encode()))
    return headers


class _Upload:
    """Streams a request body to the connection while the response is being read."""

    __slots__ = ("body", "conn", "done", "error", "framing", "ok", "scope")

    def __init__(self, conn: H1Connection, body: Body, framing: writer.BodyWriter) -> None:
        self.conn = conn
        self.body = body
        self.framing = framing
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.ok = False
        self.error: BaseException | None = None

    async def run(self) -> None:
        conn = self.conn
        framing = self.framing
        try:
            with self.scope:
                while chunk := await self.body.read():
                    await conn.stream.send_all(framing.data(chunk))
                # Trailers travel only in chunked framing (RFC 9112 §7.1.2).
                chunked = framing.mode == writer.CHUNKED
                end = framing.end(self.body.trailers if chunked else None)
                conn.sent = True
                await conn.stream.send_all(end)
                self.ok = True
        except _IO_ERRORS:
            pass  # the upstream went away; the response side reports it
        except Exception as exc:
            # The request body itself failed (downstream gone): abandon the exchange.
            self.error = exc
            await close_quietly(conn.stream)
        finally:
            self.done.set()


class H1Connection:
    """One keep-alive connection; `exchange` runs one request on it and hands back a Response."""

    __slots__ = (
        "_got_bytes",
        "_poll",
        "_tls",
        "_upload",
        "closed",
        "doubtful",
        "ended",
        "host",
        "idle_since",
        "keep_alive",
        "parser",
        "pool",
        "requests",
        "sent",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, host: Host, pool: H1Pool) -> None:
        self.stream = stream
        self.host = host
        self.pool = pool
        self.parser: ResponseParser | None = None
        self.idle_since = trio.current_time()
        self.requests = 0
        self.closed = False
        self._upload: _Upload | None = None
        self._got_bytes = False
        self.sent = False  # the whole request is framed (its last write may be in flight)
        self.ended = False  # the whole response is parsed
        self.keep_alive = False  # the response lets the connection carry another exchange
        self.doubtful = False  # a response was framed two ways: never reuse
        self._tls = stream if isinstance(stream, TlsStream) else None
        self._poll = _idle_poll(stream)

    def quiet(self) -> bool:
        """True when nothing arrived while the connection sat in the pool: no byte, no EOF.

        Whatever an upstream sends between responses answers no request; a client must not
        forward it as the next response (RFC 9112 §6.3, last paragraph), so such a connection
        is closed instead of reused. One zero-timeout poll(2), only when taken from the pool.
        """
        tls = self._tls
        # A decrypted record OpenSSL read off the socket that nobody has taken yet.
        if tls is not None and tls.pending():
            return False
        poll = self._poll
        return poll is None or not poll.poll(0)

    async def exchange(self, request: Request, out: Outgoing, nursery: trio.Nursery) -> Response:
        """Send `request` and read the response head; on failure the connection is discarded
        (and `host.end` already called) before the error propagates."""
        self.requests += 1
        self._got_bytes = self.sent = self.ended = self.keep_alive = False
        parser = self.parser = self.pool.codec.response_parser(request.method)
        try:
            try:
                head, framing = writer.request(
                    request.method,
                    request.target,
                    request_headers(request, out, self.pool.default_host),
                )
                data = out.data
                if data is not None:
                    if data:
                        head += framing.data(data)
                    head += framing.end(out.trailers)
                    self.sent = True
                    await self.stream.send_all(head)
                else:
                    assert out.stream is not None
                    await self.stream.send_all(head)
                    self._upload = _Upload(self, out.stream, framing)
                    nursery.start_soon(self._upload.run)
            except writer.WriteError as exc:
                raise UpstreamProtocolError(f"cannot send request: {exc}") from exc
            except _IO_ERRORS as exc:
                if self.requests > 1:
                    raise RetryableReset(f"stale keep-alive connection: {exc!r}") from exc
                raise UpstreamReset(f"connection lost while sending: {exc!r}") from exc
            return await self._read_head(parser)
        except BaseException as exc:
            await self.finish(False, error=not isinstance(exc, trio.Cancelled))
            raise

    async def _receive(self) -> bytes:
        try:
            data = await self.stream.receive_some(RECV_SIZE)
        except _IO_ERRORS as exc:
            raise self._lost(f"connection lost: {exc!r}") from exc
        if not data:
            raise self._lost("upstream closed the connection")
        self._got_bytes = True
        return bytes(data)

    def _lost(self, why: str) -> ProxyError:
        upload = self._upload
        if upload is not None and upload.error is not None:
            if isinstance(upload.error, ProxyError):
                return upload.error
            return UpstreamReset(f"request body failed: {upload.error!r}")
        if not self._got_bytes and self.requests > 1 and upload is None:
            return RetryableReset(f"stale keep-alive connection: {why}")
        return UpstreamReset(why)

    async def _read_head(self, parser: ResponseParser) -> Response:
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                raise UpstreamProtocolError(f"malformed response: {exc}") from exc
            if event is NEED_DATA:
                parser.feed(await self._receive())
            elif type(event) is ResponseHead:
                if event.status >= 200:
                    break
                if event.status == 101:
                    raise UpstreamProtocolError("101 Switching Protocols is not supported")
            else:
                raise UpstreamProtocolError(f"unexpected {event!r} before the response")
        head = event
        self.keep_alive = head.keep_alive
        # Hop-by-hop fields, including those the response's own Connection header names, end here;
        # the Body carries the de-framed bytes.
        headers = strip_hop_by_hop(head.headers)
        if head.framed_twice:
            # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and a proxy must not
            # forward the Content-Length; nor reuse a connection whose framing is in doubt.
            headers = [h for h in headers if h[0] != b"content-length"]
            self.doubtful = True
        status = head.status
        # Whatever body bytes came with the head are parsed now; a body that is already complete
        # frees the connection before the consumer even starts reading.
        chunks: list[bytes] = []
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                raise UpstreamProtocolError(f"malformed response body: {exc}") from exc
            if type(event) is Data:
                chunks.append(event.data)
            elif type(event) is EndOfMessage:
                trailers = event.trailers
                self.ended = True
                await self.finish(True)
                if not chunks:
                    return Response(status, headers, EmptyBody(trailers))
                return Response(status, headers, BytesBody(b"".join(chunks), trailers))
            else:
                break
        return Response(status, headers, H1Body(self, chunks, head.length))

    async def read_chunk(self) -> bytes | Headers | None:
        """The next body chunk; at the end, the trailers (a list) or None."""
        parser = self.parser
        assert parser is not None
        eof = False
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                if eof:
                    raise UpstreamReset("upstream closed the connection mid-body") from exc
                raise UpstreamProtocolError(f"malformed response body: {exc}") from exc
            if event is NEED_DATA:
                try:
                    data = await self.stream.receive_some(RECV_SIZE)
                except _IO_ERRORS as exc:
                    raise UpstreamReset(f"connection lost mid-body: {exc!r}") from exc
                eof = not data
                parser.feed(data)
            elif type(event) is Data:
                return event.data
            elif type(event) is EndOfMessage:
                self.ended = True
                return event.trailers
            else:
                raise UpstreamProtocolError(f"unexpected {event!r} in the response body")

    async def finish(self, ok: bool, error: bool | None = None) -> None:
        """End the exchange: back to the pool when both sides are cleanly done, else close.
        `error` (default: not ok) is whether the host's error count goes up."""
        if error is None:
            error = not ok
        upload, self._upload = self._upload, None
        if upload is not None and not upload.done.is_set():
            if ok and self.sent:
                # Only the last write is still in flight; let it land before reuse.
                try:
                    await upload.done.wait()
                except BaseException:
                    upload.scope.cancel()
                    await self._discard(error)
                    raise
            else:
                upload.scope.cancel()
        parser = self.parser
        if (
            ok
            and (upload is None or upload.ok)
            and self.sent
            and self.ended
            and self.keep_alive
            and not self.doubtful
            # Bytes (or EOF) after the end of the response belong to no request (RFC 9112 §6.3).
            and parser is not None
            and parser.clean
        ):
            self.parser = None
            self.host.end(False)
            self.idle_since = trio.current_time()
            if not self.pool.release(self):
                await self.close()
        else:
            await self._discard(error)

    async def _discard(self, error: bool) -> None:
        self.host.end(error)
        await self.close()

    async def close(self) -> None:
        """Close the socket (idempotent) and give its pool slot back."""
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
        await close_quietly(self.stream)


def _idle_poll(stream: trio.abc.Stream) -> select.poll | None:
    """A poll object on the connection's TCP socket, registered once for its lifetime."""
    if isinstance(stream, TlsStream):
        fd = stream.fileno()
    elif isinstance(stream, (QuickStream, trio.SocketStream)):
        fd = stream.socket.fileno()
    else:
        return None
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return poll


class H1Body:
    """A response body pulled from the connection as the consumer reads it."""

    __slots__ = ("_conn", "_error", "_prefix", "length", "trailers")

    def __init__(self, conn: H1Connection, prefix: list[bytes], length: int | None) -> None:
        self._conn: H1Connection | None = conn
        self._prefix = prefix
        self._error: ProxyError | None = None
        self.length = length
        self.trailers: Headers | None = None

    async def read(self) -> bytes:
        if self._prefix:
            return self._prefix.pop(0)
        conn = self._conn
        if conn is None:
            if self._error is not None:
                raise self._error
            return b""
        try:
            chunk = await conn.read_chunk()
        except BaseException as exc:
            # Cancelled or failed mid-body: the connection is half-used and cannot be reused.
            self._conn = None
            if isinstance(exc, ProxyError):
                self._error = exc
            else:
                self._error = UpstreamReset("response body abandoned mid-read")
            await conn.finish(False, error=isinstance(exc, ProxyError))
            raise
        if isinstance(chunk, bytes):
            return chunk
        self._conn = None
        self.trailers = chunk
        await conn.finish(True)
        return b""

    async def aclose(self) -> None:
        self._prefix.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.finish(False, error=False)
