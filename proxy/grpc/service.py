"""GrpcServiceTerminal: a Handler that serves registered gRPC methods on meshwire's own codecs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import trio
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message

from proxy.grpc.context import RequestContext
from proxy.grpc.framing import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_MESSAGE_SIZE,
    SUPPORTED_ENCODINGS,
    MessageDecoder,
    MessageTooLarge,
    encode_message,
)
from proxy.grpc.metadata import CONTENT_TYPE, is_grpc_content_type, sendable_metadata
from proxy.grpc.status import (
    GrpcError,
    StatusCode,
    code_for_http_status,
    error_trailers,
    parse_timeout,
    trailers_for,
)
from proxy.grpc.streaming import MessageStream
from proxy.http.errors import ProxyError
from proxy.http.model import (
    Body,
    BytesBody,
    EmptyBody,
    Headers,
    Request,
    Response,
    StreamInfo,
    header_get,
)

M = TypeVar("M", bound=Message)
UnaryHandler = Callable[[M, RequestContext], Awaitable[Message]]
ServerStreamHandler = Callable[[M, RequestContext], AsyncIterator[Message]]
# Bidirectional: the request messages as they arrive, the replies as the handler yields them.
BidiStreamHandler = Callable[[AsyncIterator[M], RequestContext], AsyncIterator[Message]]
_Invoke = Callable[[bytes, RequestContext], Awaitable[Response]]
_BidiInvoke = Callable[[Request, RequestContext], Awaitable[Response]]

log = logging.getLogger("meshwire.grpc")


def _parse(request_type: type[M], payload: bytes) -> M:
    try:
        return request_type.FromString(payload)
    except DecodeError as exc:
        raise GrpcError(StatusCode.INTERNAL, "cannot parse the request message") from exc


def _leaf(exc: BaseException) -> BaseException:
    """A handler that failed inside its own nursery raises a group of one: judge the one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def as_grpc_error(exc: Exception, info: StreamInfo | None = None) -> GrpcError:
    """Any exception from a handler → the status to answer; unexpected ones are logged.

    A ProxyError (e.g. an upstream failure) keeps its message, maps its HTTP status to a gRPC
    code and records its response flag on `info` for the access log.
    """
    leaf = _leaf(exc)
    if isinstance(leaf, GrpcError):
        return leaf
    if isinstance(leaf, ProxyError):
        if leaf.flag and info is not None:
            info.add_flag(leaf.flag)
        return GrpcError(code_for_http_status(leaf.status), leaf.message)
    log.exception("unhandled error in a gRPC method", exc_info=exc)
    return GrpcError(StatusCode.UNKNOWN, "unexpected error while serving the call")


class GrpcServiceTerminal:
    """Serves unary (and server-streaming) methods registered by path `/pkg.Service/Method`.

    Errors always travel as gRPC status (Trailers-Only when no message was sent), never as HTTP
    errors, except a request that is not gRPC at all (415, as PROTOCOL-HTTP2 asks).
    """

    def __init__(
        self,
        *,
        max_receive_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_send_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._methods: dict[str, _Invoke] = {}
        self._bidi: dict[str, _BidiInvoke] = {}
        self.max_receive_message_size = max_receive_message_size
        self.max_send_message_size = max_send_message_size

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self._methods) | frozenset(self._bidi)

    def add_unary(self, path: str, request_type: type[M], handler: UnaryHandler[M]) -> None:
        async def invoke(payload: bytes, ctx: RequestContext) -> Response:
            reply = await handler(_parse(request_type, payload), ctx)
            data = reply.SerializeToString()
            if len(data) > self.max_send_message_size:
                raise MessageTooLarge(len(data), self.max_send_message_size)
            trailers = [*trailers_for(StatusCode.OK), *ctx.response_trailers]
            body = BytesBody(encode_message(data), trailers=trailers)
            return Response(200, self._response_headers(ctx), body)

        self._register(path, invoke)

    def add_server_streaming(
        self, path: str, request_type: type[M], handler: ServerStreamHandler[M]
    ) -> None:
        async def invoke(payload: bytes, ctx: RequestContext) -> Response:
            messages = handler(_parse(request_type, payload), ctx)
            stream = MessageStream(messages, ctx, self.max_send_message_size, as_grpc_error)
            # Pull the first message now: a failure before it is answered as Trailers-Only.
            await stream.prime()
            if stream.failed is not None:
                raise stream.failed
            return Response(200, self._response_headers(ctx), stream)

        self._register(path, invoke)

    def add_bidi_streaming(
        self, path: str, request_type: type[M], handler: BidiStreamHandler[M]
    ) -> None:
        """The handler reads requests as they come and yields replies; the request body stays
        open for as long as the reply stream runs (closing the stream closes it)."""

        async def invoke(request: Request, ctx: RequestContext) -> Response:
            decoder = self._decoder(request)
            requests = _requests(request.body, decoder, request_type)
            stream = MessageStream(
                _closing(handler(requests, ctx), request.body),
                ctx,
                self.max_send_message_size,
                as_grpc_error,
            )
            await stream.prime()
            if stream.failed is not None:
                raise stream.failed
            return Response(200, self._response_headers(ctx), stream)

        self._check_path(path)
        self._bidi[path] = invoke

    def add_method(
        self,
        method: MethodDescriptor,
        handler: UnaryHandler[M] | ServerStreamHandler[M] | BidiStreamHandler[M],
    ) -> None:
        """Register by descriptor (e.g. a method of dapr_pb2's `Dapr` service): the path and the
        request class come from the descriptor, whichever module the SDK generated it in."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        request_type = message_factory.GetMessageClass(method.input_type)
        if method.client_streaming:
            if not method.server_streaming:
                raise ValueError(f"{method.full_name}: client streaming is not supported")
            self.add_bidi_streaming(path, request_type, handler)  # type: ignore[arg-type]
        elif method.server_streaming:
            self.add_server_streaming(path, request_type, handler)  # type: ignore[arg-type]
        else:
            self.add_unary(path, request_type, handler)  # type: ignore[arg-type]

    def _register(self, path: str, invoke: _Invoke) -> None:
        self._check_path(path)
        self._methods[path] = invoke

    def _check_path(self, path: str) -> None:
        if not path.startswith("/") or path.count("/") != 2:
            raise ValueError(f"a gRPC path is /package.Service/Method, not {path!r}")
        if path in self._methods or path in self._bidi:
            raise ValueError(f"{path} is already registered")

    async def __call__(self, request: Request, /) -> Response:
        if not is_grpc_content_type(header_get(request.headers, b"content-type")):
            await request.body.aclose()
            return Response.text(415, "content-type must be application/grpc\n")
        path = request.path.decode("latin-1")
        ctx = RequestContext(request, path)
        bidi = self._bidi.get(path)
        if bidi is not None:
            return await self._serve_bidi(bidi, request, ctx)
        try:
            invoke = self._methods.get(path)
            if invoke is None:
                raise GrpcError(StatusCode.UNIMPLEMENTED, f"unknown method {path}")
            timeout = header_get(request.headers, b"grpc-timeout")
            if timeout is not None:
                ctx.deadline = trio.current_time() + parse_timeout(timeout)
            with trio.move_on_at(ctx.deadline) as deadline:
                payload = await self._read_one(request.body, self._decoder(request))
                response = await invoke(payload, ctx)
            if deadline.cancelled_caught:
                raise GrpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            return response
        except Exception as exc:
            return self._trailers_only(ctx, as_grpc_error(exc, request.info))
        finally:
            await request.body.aclose()

    async def _serve_bidi(
        self, invoke: _BidiInvoke, request: Request, ctx: RequestContext
    ) -> Response:
        try:
            timeout = header_get(request.headers, b"grpc-timeout")
            if timeout is not None:
                ctx.deadline = trio.current_time() + parse_timeout(timeout)
            return await invoke(request, ctx)
        except Exception as exc:
            await request.body.aclose()
            return self._trailers_only(ctx, as_grpc_error(exc, request.info))

    def _decoder(self, request: Request) -> MessageDecoder:
        encoding = header_get(request.headers, b"grpc-encoding")
        if encoding is not None and encoding.strip().lower() not in SUPPORTED_ENCODINGS:
            name = encoding.decode("ascii", "replace")
            raise GrpcError(StatusCode.UNIMPLEMENTED, f"compression not supported: {name}")
        return MessageDecoder(self.max_receive_message_size, encoding)

    @staticmethod
    async def _read_one(body: Body, decoder: MessageDecoder) -> bytes:
        """Exactly one message, then the end of the stream; the declared length is not trusted."""
        messages: list[bytes] = []
        while chunk := await body.read():
            messages.extend(decoder.feed(chunk))
            if len(messages) > 1:
                raise GrpcError(StatusCode.UNIMPLEMENTED, "more than one request message")
        decoder.end()
        if not messages:
            # grpc statuscodes.md: a request cardinality violation is UNIMPLEMENTED.
            raise GrpcError(StatusCode.UNIMPLEMENTED, "no request message")
        return messages[0]

    @staticmethod
    def _response_headers(ctx: RequestContext) -> Headers:
        return [
            (b"content-type", CONTENT_TYPE),
            (b"grpc-accept-encoding", ACCEPT_ENCODING),
            *ctx.response_headers,
        ]

    def _trailers_only(self, ctx: RequestContext, err: GrpcError) -> Response:
        """PROTOCOL-HTTP2 Trailers-Only: one HEADERS frame with the status, no body."""
        headers = self._response_headers(ctx)
        headers += error_trailers(err)
        headers += sendable_metadata(err.metadata)
        headers += ctx.response_trailers
        return Response(200, headers, EmptyBody())


async def _requests(body: Body, decoder: MessageDecoder, request_type: type[M]) -> AsyncIterator[M]:
    """The request messages of a client stream, parsed, as the body delivers them."""
    while chunk := await body.read():
        for payload in decoder.feed(chunk):
            yield _parse(request_type, payload)
    decoder.end()


async def _closing(messages: AsyncIterator[Message], body: Body) -> AsyncIterator[Message]:
    """`messages`, then the request body closed however the stream ends."""
    try:
        async for message in messages:
            yield message
    finally:
        aclose = getattr(messages, "aclose", None)
        if aclose is not None:
            await aclose()
        await body.aclose()


__all__ = [
    "BidiStreamHandler",
    "GrpcServiceTerminal",
    "RequestContext",
    "ServerStreamHandler",
    "UnaryHandler",
]
