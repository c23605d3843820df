"""Terminal: Dapr's gRPC API on the app-facing gRPC port, and transparent gRPC proxying."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from google.protobuf import empty_pb2, message_factory
from google.protobuf.message import Message

from filters.dapr.app_callback import (
    InvokeResponseType,
    Verb,
    api_error,
    error_for_http_answer,
    http_error,
    metadata_from_headers,
)
from filters.dapr.bodies import read_body
from filters.dapr.extended import set_attribute
from filters.dapr.invoke import (
    API_TOKEN,
    APP_ID_HEADER,
    CALLEE_APP_ID,
    Invoker,
    app_id_text,
    split_app_id,
)
from filters.dapr.protos import dapr_pb2
from filters.dapr.unexpected import unexpected
from filters.pubsub.components import pubsub_components  # pub/sub (S4)
from filters.pubsub.grpc_api import PubSubGrpcApi  # pub/sub (S4)
from filters.pubsub.publisher import Publisher  # pub/sub (S4)
from filters.pubsub.streaming import SUBSCRIBE_STREAM, StreamingSubscriptions  # pub/sub (S4)
from filters.state.grpc_api import StateGrpcApi  # state management (S3)
from filters.state.observe import Observer  # state management (S3)
from filters.state.registry import registered_components  # state management (S3)
from proxy.grpc.context import RequestContext
from proxy.grpc.metadata import CONTENT_TYPE, is_grpc_content_type, sendable_metadata
from proxy.grpc.service import GrpcServiceTerminal, UnaryHandler
from proxy.grpc.status import GrpcError, StatusCode, code_for_transport_status, error_trailers
from proxy.http.errors import DaprApiError, ProxyError
from proxy.http.model import BytesBody, EmptyBody, Headers, Request, Response, header_get
from proxy.sidecar.runtime import SidecarRuntime

if TYPE_CHECKING:
    from dapr.proto.common.v1.common_pb2 import InvokeResponse
    from dapr.proto.runtime.v1.invoke_pb2 import InvokeServiceRequest
    from dapr.proto.runtime.v1.metadata_pb2 import (
        GetMetadataRequest,
        GetMetadataResponse,
        SetMetadataRequest,
    )

DAPR = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]
DAPR_PREFIX = f"/{DAPR.full_name}/"
NO_PROXY_TARGET = (
    "failed to proxy request: required metadata dapr-callee-app-id or dapr-app-id not found"
)
_ERROR_BODY_LIMIT = 64 * 1024  # a sidecar's error answer on the proxy path is read this far
_METHOD_SAFE = "/:@!$&'()*+,;="  # a method name keeps its path shape; `?`, `#` and `%` escaped

GetMetadataResponseType = cast(
    "type[GetMetadataResponse]",
    message_factory.GetMessageClass(DAPR.methods_by_name["GetMetadata"].output_type),
)


def trailers_only(err: GrpcError) -> Response:
    """PROTOCOL-HTTP2 Trailers-Only: the status in the one HEADERS frame, no body."""
    headers: Headers = [(b"content-type", CONTENT_TYPE), *error_trailers(err)]
    headers += sendable_metadata(err.metadata)
    return Response(200, headers, EmptyBody())


class DaprGrpc:
    """Dispatches like daprd's gRPC server: `dapr.proto.runtime.v1.Dapr/*` to the API (its
    methods not built yet answer UNIMPLEMENTED), any other path to the gRPC proxy, which needs
    `dapr-callee-app-id` or `dapr-app-id` metadata. The API token guards both."""

    def __init__(self, runtime: SidecarRuntime, max_message_size: int) -> None:
        self.runtime = runtime
        self.invoker = Invoker(runtime)
        self.max_message_size = max_message_size
        self._publisher = Publisher(  # pub/sub (S4)
            runtime.pubsub, runtime.app_id, runtime.metrics, runtime.spans
        )
        self.api = GrpcServiceTerminal(
            max_receive_message_size=max_message_size, max_send_message_size=max_message_size
        )
        for name, handler in self._methods().items():
            self.api.add_method(DAPR.methods_by_name[name], _guarded(name, handler))
        # Pub/sub (S4): SubscribeTopicEventsAlpha1, a bidirectional stream.
        self.api.add_method(
            SUBSCRIBE_STREAM,
            StreamingSubscriptions(self._publisher, runtime.subscriber, lambda: runtime.background),
        )

    def _methods(self) -> dict[str, UnaryHandler[Any]]:
        """The Dapr service methods served so far, by name."""
        return {
            "InvokeService": self._invoke_service,
            "GetMetadata": self._get_metadata,
            "SetMetadata": self._set_metadata,
            "Shutdown": self._shutdown,
            # State management (S3): SaveState, GetState, … QueryStateAlpha1.
            **StateGrpcApi(
                DAPR, self.runtime.state, Observer(self.runtime.metrics, self.runtime.namespace)
            ).methods(),
            # Pub/sub (S4): PublishEvent, BulkPublishEventAlpha1, BulkPublishEvent.
            **PubSubGrpcApi(DAPR, self._publisher).methods(),
        }

    async def __call__(self, request: Request, /) -> Response:
        if not is_grpc_content_type(header_get(request.headers, b"content-type")):
            return await self.api(request)  # answers 415, as for any non-gRPC request
        denied = self._check_token(request)
        if denied is not None:
            await request.body.aclose()
            return trailers_only(denied)
        if request.path.decode("latin-1").startswith(DAPR_PREFIX):
            return await self.api(request)
        try:
            return await self._proxy(request)
        except GrpcError as err:
            await request.body.aclose()
            return trailers_only(err)

    def _check_token(self, request: Request) -> GrpcError | None:
        expected = self.runtime.api_token
        if expected is None:
            return None
        supplied = header_get(request.headers, API_TOKEN)
        if supplied is None:
            return http_error(401, "missing api token in request metadata")
        if supplied.decode("latin-1") != expected:
            return http_error(401, "authentication error: api token mismatch")
        return None

    # --- transparent proxying ------------------------------------------------------------------

    async def _proxy(self, request: Request) -> Response:
        """The call as it came (any cardinality, streamed both ways) to the target app: ours
        through the app channel, another through its sidecar."""
        target = header_get(request.headers, CALLEE_APP_ID) or header_get(
            request.headers, APP_ID_HEADER
        )
        if target is None:
            raise GrpcError(StatusCode.UNKNOWN, NO_PROXY_TARGET)
        try:
            app_id, namespace = split_app_id(app_id_text(target), self.runtime.namespace)
            response = await self.invoker.invoke(request, app_id, namespace, request.target)
        except DaprApiError as exc:
            raise api_error(exc) from exc
        if response.status == 200 and is_grpc_content_type(
            header_get(response.headers, b"content-type")
        ):
            return response
        raise await _not_grpc(response)

    # --- the Dapr service ----------------------------------------------------------------------

    async def _invoke_service(self, call: InvokeServiceRequest, ctx: RequestContext) -> Message:
        request = self._http_request(call, ctx)
        try:
            app_id, namespace = split_app_id(call.id, self.runtime.namespace)
            response = await self.invoker.invoke(request, app_id, namespace, request.target)
            body = await read_body(response.body, self.max_message_size)
        except DaprApiError as exc:
            raise api_error(exc) from exc
        for name, value in metadata_from_headers(response.headers):
            ctx.add_header(name, value)
        if not 200 <= response.status < 300:
            raise error_for_http_answer(response, body)
        content_type = header_get(response.headers, b"content-type") or b""
        reply: InvokeResponse = InvokeResponseType(content_type=content_type.decode("latin-1"))
        reply.data.value = body
        return reply

    @staticmethod
    def _http_request(call: InvokeServiceRequest, ctx: RequestContext) -> Request:
        """The invocation as daprd hands it to an HTTP app: the verb (POST when none is given),
        `/<method>?<querystring>`, the data as the body, the call's metadata as headers."""
        message = call.message
        verb = Verb.Name(message.http_extension.verb)
        target = "/" + quote(message.method.removeprefix("/"), safe=_METHOD_SAFE)
        if message.http_extension.querystring:
            target += "?" + message.http_extension.querystring
        headers: Headers = [
            (name, value)
            for name, value in ctx.metadata
            if not name.endswith(b"-bin") and name != b"user-agent"
        ]
        if message.content_type:
            headers.append((b"content-type", message.content_type.encode("latin-1")))
        data = message.data.value
        return Request(
            b"POST" if verb == "NONE" else verb.encode(),
            target.encode("utf-8"),
            headers,
            BytesBody(data) if data else EmptyBody(),
            info=ctx.info,
        )

    async def _get_metadata(self, call: GetMetadataRequest, ctx: RequestContext) -> Message:
        runtime = self.runtime
        reply = GetMetadataResponseType(
            id=runtime.app_id,
            runtime_version=runtime.extended["daprRuntimeVersion"],
            extended_metadata=dict(runtime.extended),
        )
        for entry in registered_components(runtime.components, runtime.state):  # S3
            reply.registered_components.add(**entry)
        for entry in pubsub_components(runtime.pubsub):  # S4
            reply.registered_components.add(**entry)
        for sub in runtime.subscriber.active:  # S4
            listed = sub.describe()
            added = reply.subscriptions.add(
                pubsub_name=sub.pubsub,
                topic=sub.topic,
                metadata=dict(sub.metadata),
                dead_letter_topic=sub.dead_letter_topic or "",
                type=sub.kind,
            )
            for rule in cast(list[dict[str, str]], listed["rules"]):
                added.rules.rules.add(match=rule["match"], path=rule["path"])
        app = runtime.config.app
        if app is not None and runtime.app is not None:
            host = runtime.app.hosts[0]
            props = reply.app_connection_properties
            props.port = host.port
            props.protocol = app.protocol
            props.channel_address = host.host
            props.max_concurrency = max(app.max_concurrency, 0)
        return reply

    async def _set_metadata(self, call: SetMetadataRequest, ctx: RequestContext) -> Message:
        try:
            set_attribute(self.runtime.extended, call.key, call.value)
        except DaprApiError as exc:
            raise api_error(exc) from None
        return empty_pb2.Empty()

    async def _shutdown(self, call: Message, ctx: RequestContext) -> Message:
        self.runtime.request_shutdown()
        return empty_pb2.Empty()


def _guarded(name: str, handler: UnaryHandler[Any]) -> UnaryHandler[Any]:
    """A method whose unexpected exceptions are one log line and daprd's unknown error."""

    async def call(request: Any, ctx: RequestContext) -> Message:
        try:
            return await handler(request, ctx)
        except (GrpcError, ProxyError):
            raise
        except Exception as exc:
            raise api_error(unexpected(f"{DAPR.full_name}/{name}", exc)) from exc

    return call


async def _not_grpc(response: Response) -> GrpcError:
    """A proxied call answered in plain HTTP (a sidecar's Dapr error): its status, as gRPC."""
    try:
        body = await read_body(response.body, _ERROR_BODY_LIMIT)
    except DaprApiError:
        body = b""
    error = _dapr_error(body)
    if error is not None:
        return api_error(DaprApiError(error[0], error[1], status=response.status))
    code = code_for_transport_status(response.status)
    return GrpcError(code, f"unexpected HTTP status {response.status} from the target")


def _dapr_error(body: bytes) -> tuple[str, str] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    code, message = value.get("errorCode"), value.get("message")
    if isinstance(code, str) and isinstance(message, str):
        return code, message
    return None
