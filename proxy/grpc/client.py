"""unary_call: one gRPC request/response exchange through any meshwire Handler (e.g. a cluster)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError, Message

from proxy.chain import Handler
from proxy.grpc.framing import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageDecoder,
    encode_message,
)
from proxy.grpc.metadata import CONTENT_TYPE, is_grpc_content_type, outgoing_metadata
from proxy.grpc.status import (
    GrpcError,
    StatusCode,
    code_for_transport_status,
    error_from_headers,
    format_timeout,
)
from proxy.http.errors import ProxyError, UpstreamTimeout
from proxy.http.model import (
    BytesBody,
    Header,
    Headers,
    Request,
    Response,
    StreamInfo,
    header_get,
)
from proxy.version import VERSION

R = TypeVar("R", bound=Message)

USER_AGENT = f"meshwire-grpc/{VERSION}".encode()


async def unary_call(
    send: Handler,
    path: str,
    message: Message,
    response_type: type[R],
    *,
    metadata: Iterable[Header] = (),
    timeout: float | None = None,  # noqa: ASYNC109 - the call's deadline, sent as grpc-timeout
    authority: bytes = b"",
    info: StreamInfo | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[R, Headers]:
    """Call `path` ("/pkg.Service/Method") with `message`; returns the reply and the trailing
    metadata (`-bin` values decoded).

    `metadata` `-bin` values are raw bytes (encoded here). `timeout` is sent as `grpc-timeout` and
    also bounds the whole exchange locally. `info`, when given, is the StreamInfo of the request
    this call serves, so the upstream span and cluster are recorded on it. Every failure is a
    GrpcError: a non-OK status (details decoded), a non-200 HTTP status (the spec's mapping),
    an upstream failure, or the local deadline (DEADLINE_EXCEEDED).
    """
    headers: Headers = [
        (b"content-type", CONTENT_TYPE),
        (b"te", b"trailers"),
        (b"grpc-accept-encoding", ACCEPT_ENCODING),
        (b"user-agent", USER_AGENT),
    ]
    if timeout is not None:
        timeout = max(0.0, timeout)
        headers.append((b"grpc-timeout", format_timeout(timeout)))
    headers += outgoing_metadata(metadata)
    request = Request(
        b"POST",
        path.encode("ascii"),
        headers,
        BytesBody(encode_message(message.SerializeToString())),
        scheme=b"http",
        authority=authority,
        http_version="2",
        info=info,
    )
    with trio.move_on_after(math.inf if timeout is None else timeout):
        try:
            response = await send(request)
            return await _read_reply(response, response_type, max_message_size)
        except ProxyError as exc:
            raise _from_proxy_error(exc) from exc
    raise GrpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


def _from_proxy_error(exc: ProxyError) -> GrpcError:
    if isinstance(exc, UpstreamTimeout):
        return GrpcError(StatusCode.DEADLINE_EXCEEDED, exc.message)
    return GrpcError(code_for_transport_status(exc.status), exc.message)


async def _read_reply(
    response: Response, response_type: type[R], max_message_size: int
) -> tuple[R, Headers]:
    body = response.body
    try:
        if response.status != 200:
            # PROTOCOL-HTTP2: not a gRPC answer (a proxy on the way?); grpc-status is ignored.
            code = code_for_transport_status(response.status)
            raise GrpcError(code, f"unexpected HTTP status {response.status}")
        trailers_only = error_from_headers(response.headers)
        if trailers_only is not None:
            _raise_unless_ok(trailers_only)
            raise GrpcError(StatusCode.UNIMPLEMENTED, "OK status without a response message")
        content_type = header_get(response.headers, b"content-type")
        if not is_grpc_content_type(content_type):
            shown = (content_type or b"none").decode("latin-1")
            raise GrpcError(StatusCode.UNKNOWN, f"unexpected content-type {shown}")
        decoder = MessageDecoder(max_message_size, header_get(response.headers, b"grpc-encoding"))
        messages: list[bytes] = []
        while chunk := await body.read():
            messages.extend(decoder.feed(chunk))
            if len(messages) > 1:
                raise GrpcError(StatusCode.UNIMPLEMENTED, "more than one response message")
        decoder.end()
        status = error_from_headers(body.trailers or [])
        if status is None:
            raise GrpcError(StatusCode.INTERNAL, "the server ended the call without a status")
        _raise_unless_ok(status)
        if not messages:
            raise GrpcError(StatusCode.UNIMPLEMENTED, "OK status without a response message")
        try:
            reply = response_type.FromString(messages[0])
        except DecodeError as exc:
            raise GrpcError(StatusCode.INTERNAL, "cannot parse the response message") from exc
        return reply, status.metadata
    finally:
        await body.aclose()


def _raise_unless_ok(status: GrpcError) -> None:
    if status.code != StatusCode.OK:
        raise status
