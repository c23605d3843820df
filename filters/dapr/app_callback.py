"""gRPC apps: an HTTP-shaped invocation as AppCallback/OnInvoke, and gRPC statuses as HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

from google.protobuf import any_pb2, json_format, message_factory
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status

from filters.dapr.bodies import read_body
from filters.dapr.protos import appcallback_pb2, common_pb2
from proxy.chain import Handler
from proxy.grpc.client import unary_call
from proxy.grpc.details import unpack_details
from proxy.grpc.metadata import RESERVED, b64decode_bin, b64encode_bin
from proxy.grpc.status import (
    DETAILS,
    GrpcError,
    StatusCode,
    code_for_http_status,
    http_status_for,
)
from proxy.http.errors import DaprApiError, ProxyError
from proxy.http.model import (
    CONNECTION_SPECIFIC,
    BytesBody,
    Header,
    Headers,
    Request,
    Response,
    header_get,
)

if TYPE_CHECKING:
    from dapr.proto.common.v1.common_pb2 import InvokeRequest, InvokeResponse

ON_INVOKE = appcallback_pb2.DESCRIPTOR.services_by_name["AppCallback"].methods_by_name["OnInvoke"]
ON_INVOKE_PATH = f"/{ON_INVOKE.containing_service.full_name}/{ON_INVOKE.name}"
InvokeRequestType = cast(
    "type[InvokeRequest]", message_factory.GetMessageClass(ON_INVOKE.input_type)
)
InvokeResponseType = cast(
    "type[InvokeResponse]", message_factory.GetMessageClass(ON_INVOKE.output_type)
)
Verb = common_pb2.HTTPExtension.Verb  # common.proto, where every SDK version generates it
_VERB_NAMES = frozenset(Verb.keys())

# Dapr's isPermanentHTTPHeader: these travel to gRPC as `dapr-<name>`, so an HTTP caller's
# content-type, host or cookie can never be mistaken for the call's own.
_PERMANENT = frozenset(
    {
        b"accept",
        b"accept-charset",
        b"accept-language",
        b"accept-ranges",
        b"cache-control",
        b"content-type",
        b"content-length",
        b"cookie",
        b"date",
        b"expect",
        b"from",
        b"host",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-schedule-tag-match",
        b"if-unmodified-since",
        b"max-forwards",
        b"origin",
        b"pragma",
        b"referer",
        b"via",
        b"warning",
    }
)
_DROPPED = CONNECTION_SPECIFIC | {b"user-agent"}  # unary_call sends its own user-agent
_ERROR_DOMAIN = "dapr.io"
_MAX_DETAIL = 63  # Dapr truncates ErrorInfo metadata values to 63 characters


def metadata_from_headers(headers: Iterable[Header]) -> Headers:
    """HTTP headers as gRPC metadata, converted as Dapr converts them (raw values: `-bin` ones
    are decoded here and re-encoded by the sender; undecodable ones are dropped)."""
    metadata: Headers = []
    for name, value in headers:
        key = name.lower()
        if key[:1] == b":" or key in _DROPPED:
            continue
        if key in _PERMANENT:
            key = b"dapr-" + key
        if key in RESERVED or key.startswith(b"grpc-"):
            continue
        if key.endswith(b"-bin"):
            try:
                value = b64decode_bin(value)
            except ValueError:
                continue
        metadata.append((key, value))
    return metadata


def invoke_request(request: Request, data: bytes) -> InvokeRequest:
    """InvokeRequest{method, data, content_type, http_extension{verb, querystring}} for an
    HTTP-shaped invocation whose target is `/<method>?<query>`."""
    path, _, query = request.target.partition(b"?")
    message = InvokeRequestType(
        method=unquote(path.decode("latin-1").removeprefix("/"), "utf-8"),
        content_type=(header_get(request.headers, b"content-type") or b"").decode("latin-1"),
    )
    message.data.value = data
    verb = request.method.decode("latin-1").upper()
    message.http_extension.verb = Verb.Value(verb) if verb in _VERB_NAMES else Verb.NONE
    message.http_extension.querystring = query.decode("latin-1")
    return message


async def call_on_invoke(send: Handler, request: Request, max_message_size: int) -> Response:
    """Call the app's OnInvoke and answer as its HTTP twin would: 200 with the reply's data, or
    the gRPC status as HTTP (grpc-gateway's status, a JSON google.rpc.Status body). A failure to
    reach the app is re-raised as the ProxyError it was, for the caller's invoke error."""
    message = invoke_request(request, await read_body(request.body, max_message_size))
    try:
        reply, _ = await unary_call(
            send,
            ON_INVOKE_PATH,
            message,
            InvokeResponseType,
            metadata=metadata_from_headers(request.headers),
            info=request.info,
            max_message_size=max_message_size,
        )
    except GrpcError as err:
        if isinstance(err.__cause__, ProxyError):
            raise err.__cause__ from None
        return status_response(err)
    data = reply.data.value
    headers: Headers = [(b"content-length", str(len(data)).encode())]
    if reply.content_type:
        headers.insert(0, (b"content-type", reply.content_type.encode("latin-1")))
    return Response(200, headers, BytesBody(data))


def _status(err: GrpcError) -> Status:
    status = Status(code=int(err.code), message=err.message)
    for detail in err.details:
        if isinstance(detail, any_pb2.Any):
            status.details.append(detail)
        else:
            status.details.add().Pack(detail)
    return status


def status_response(err: GrpcError) -> Response:
    """A gRPC app's error for an HTTP caller (Dapr §1.1). The whole status also travels in
    `grpc-status-details-bin`, so a gRPC caller further on gets the app's own status back."""
    status = _status(err)
    try:
        text = json_format.MessageToJson(status, indent=None)
    except TypeError:  # a detail of a type this process does not know: JSON cannot show it
        text = json.dumps({"code": int(err.code), "message": err.message})
    body = text.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (DETAILS, b64encode_bin(status.SerializeToString())),
    ]
    return Response(http_status_for(err.code), headers, BytesBody(body))


def error_for_http_answer(response: Response, body: bytes) -> GrpcError:
    """A non-2xx answer to an invocation as Dapr's gRPC API reports it: the gRPC app's own
    status when the answer carries one, else Dapr's ErrorFromHTTPResponseCode."""
    carried = header_get(response.headers, DETAILS)
    if carried is not None:
        try:
            status = Status.FromString(b64decode_bin(carried))
            return GrpcError(StatusCode(status.code), status.message, unpack_details(status))
        except (DecodeError, ValueError):
            pass  # not a status after all: the HTTP status decides
    return http_error(response.status, body.decode("utf-8", "replace"))


def http_error(status: int, detail: str) -> GrpcError:
    """Dapr's ErrorFromHTTPResponseCode: the code for the HTTP status, its reason phrase as the
    message, and an ErrorInfo holding the status and (the start of) the detail."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    info = ErrorInfo(
        reason=reason,
        domain=_ERROR_DOMAIN,
        metadata={"http.code": str(status), "http.error_message": detail[:_MAX_DETAIL]},
    )
    return GrpcError(code_for_http_status(status), reason, [info])


# DaprApiError statuses → the codes Dapr's gRPC API uses for the same failures.
_CODE_FOR_API_ERROR = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    413: StatusCode.RESOURCE_EXHAUSTED,
    500: StatusCode.INTERNAL,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}


def api_error(err: DaprApiError) -> GrpcError:
    code = _CODE_FOR_API_ERROR.get(err.status, StatusCode.INTERNAL)
    return GrpcError(code, err.message)
