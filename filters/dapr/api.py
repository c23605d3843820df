"""Terminal: Dapr's HTTP API on the app-facing port — health, metadata, shutdown, invocation."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from filters.dapr.bodies import read_body
from filters.dapr.extended import MAX_VALUE_BYTES, set_attribute
from filters.dapr.invoke import (
    API_TOKEN,
    APP_ID_HEADER,
    ERR_DIRECT_INVOKE,
    Invoker,
    app_id_text,
    split_app_id,
)
from filters.dapr.metering import api_path
from filters.dapr.params import BadParam, path_param, printable
from filters.dapr.unexpected import unexpected
from filters.pubsub import http_api as publish_http  # pub/sub (S4)
from filters.pubsub.components import pubsub_components  # pub/sub (S4)
from filters.pubsub.publisher import Publisher  # pub/sub (S4)
from filters.state import http_api as state_http  # state management (S3)
from filters.state.observe import Observer  # state management (S3)
from filters.state.registry import registered_components  # state management (S3)
from filters.tracing.body import EndingBody
from proxy.http.errors import DaprApiError, ProxyError
from proxy.http.model import BytesBody, Request, Response, header_get
from proxy.sidecar.runtime import SidecarRuntime

_INVOKE_PREFIX = b"/v1.0/invoke/"
_HEALTH = (b"/v1.0/healthz", b"/v1.0/healthz/outbound")
_NO_APP_ID = "failed getting app id either from the URL path or the header dapr-app-id"

Route = Callable[[Request, bytes], Awaitable[Response]]


def json_response(status: int, value: object) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return Response(status, headers, BytesBody(body))


def no_content() -> Response:
    return Response(204, [])


class DaprApi:
    """The routes daprd serves on its HTTP port (the ones built so far), in daprd's order:
    named API routes first, then service invocation as the fallback for `dapr-app-id`."""

    def __init__(self, runtime: SidecarRuntime, max_body_size: int) -> None:
        self.runtime = runtime
        self.invoker = Invoker(runtime)
        self.max_body_size = max_body_size
        # State management (S3): /v1.0/state/* and /v1.0-alpha1/state/*.
        observer = Observer(runtime.metrics, runtime.namespace)
        self.state = state_http.StateHttpApi(runtime.state, observer, max_body_size)
        # Pub/sub (S4): /v1.0/publish/* and bulk publish.
        self.publisher = Publisher(runtime.pubsub, runtime.app_id, runtime.metrics, runtime.spans)
        self.publish = publish_http.PublishHttpApi(self.publisher, max_body_size)
        self._routes: dict[tuple[bytes, bytes], Route] = {
            (b"GET", b"/v1.0/healthz"): self._healthz,
            (b"GET", b"/v1.0/healthz/outbound"): self._healthz_outbound,
            (b"GET", b"/v1.0/metadata"): self._metadata,
            (b"POST", b"/v1.0/shutdown"): self._shutdown,
            (b"PUT", b"/v1.0/shutdown"): self._shutdown,
        }

    async def __call__(self, request: Request) -> Response:
        """Serve one API call and record Dapr's HTTP server metrics when its response ends."""
        metrics = self.runtime.metrics
        method = request.method.decode("latin-1")
        started = time.monotonic()
        received = request.body = EndingBody(request.body)
        target = header_get(request.headers, APP_ID_HEADER)
        label = api_path(_clean(request.path), target is not None)
        try:
            try:
                response = await self._serve(request)
            except ProxyError:
                raise
            except Exception as exc:  # a bug met by some input: Dapr's 500, one log line
                call = f"{method} {printable(request.path[:200])}"
                raise unexpected(call, exc) from exc
        except ProxyError as exc:
            elapsed = (time.monotonic() - started) * 1000
            metrics.server(method, label, exc.status, elapsed, received.count, 0)
            raise

        def ended(error: BaseException | None) -> None:
            elapsed = (time.monotonic() - started) * 1000
            metrics.server(method, label, response.status, elapsed, received.count, sent.count)

        sent = response.body = EndingBody(response.body, ended)
        return response

    async def _serve(self, request: Request) -> Response:
        path, _, query = request.target.partition(b"?")
        path = _clean(path)
        if self.runtime.api_token is not None and path not in _HEALTH:
            supplied = header_get(request.headers, API_TOKEN)
            if supplied is None or supplied.decode("latin-1") != self.runtime.api_token:
                return Response.text(401, "invalid api token")
        route = self._routes.get((request.method, path))
        if route is not None:
            return await route(request, query)
        if path.startswith(b"/v1.0/metadata/") and request.method == b"PUT":
            return await self._set_metadata(request, path)
        if state_http.handles(path):  # state management (S3), before the invocation fallback
            return await self.state(request, path, query)
        if publish_http.handles(path):  # pub/sub (S4)
            return await self.publish(request, path, query)
        if path.startswith(_INVOKE_PREFIX):
            return await self._invoke_path(request, path, query)
        target = header_get(request.headers, APP_ID_HEADER)
        if target is None:
            raise DaprApiError(ERR_DIRECT_INVOKE, _NO_APP_ID, status=404)
        return await self._invoke(request, app_id_text(target), request.target)

    async def _healthz(self, request: Request, query: bytes) -> Response:
        wanted = parse_qs(query.decode("latin-1")).get("appid")
        if wanted and wanted[0] != self.runtime.app_id:
            raise DaprApiError(
                "ERR_HEALTH_APPID_NOT_MATCH",
                f"dapr app-id does not match: {printable(wanted[0])} != {self.runtime.app_id}",
            )
        if not self.runtime.ready:
            waiting = "app channel" if self.runtime.outbound_ready.is_set() else "outbound"
            raise DaprApiError("ERR_HEALTH_NOT_READY", f"dapr is not ready: [{waiting}]")
        return no_content()

    async def _healthz_outbound(self, request: Request, query: bytes) -> Response:
        if not self.runtime.outbound_ready.is_set():
            raise DaprApiError("ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound is not ready")
        return no_content()

    async def _metadata(self, request: Request, query: bytes) -> Response:
        runtime = self.runtime
        value: dict[str, object] = {
            "id": runtime.app_id,
            "runtimeVersion": runtime.extended["daprRuntimeVersion"],
            "extended": dict(runtime.extended),
        }
        components = registered_components(runtime.components, runtime.state)  # S3
        components.extend(pubsub_components(runtime.pubsub))  # S4
        if components:
            value["components"] = components
        subscriptions = [sub.describe() for sub in runtime.subscriber.active]  # S4
        if subscriptions:
            value["subscriptions"] = subscriptions
        app = runtime.config.app
        if app is not None and runtime.app is not None:
            host = runtime.app.hosts[0]
            value["appConnectionProperties"] = {
                "port": host.port,
                "protocol": app.protocol,
                "channelAddress": host.host,
                **({"maxConcurrency": app.max_concurrency} if app.max_concurrency > 0 else {}),
            }
        return json_response(200, value)

    async def _set_metadata(self, request: Request, path: bytes) -> Response:
        try:
            key = path_param(path[len(b"/v1.0/metadata/") :])
        except BadParam as exc:
            message = f"metadata key: {exc}"
            raise DaprApiError("ERR_MALFORMED_REQUEST", message, status=400) from None
        value = await read_body(request.body, MAX_VALUE_BYTES)
        set_attribute(self.runtime.extended, key, value.decode("utf-8", "replace"))
        return no_content()

    async def _shutdown(self, request: Request, query: bytes) -> Response:
        self.runtime.request_shutdown()
        return no_content()

    async def _invoke_path(self, request: Request, path: bytes, query: bytes) -> Response:
        rest = path[len(_INVOKE_PREFIX) :]
        app_id, sep, method = rest.partition(b"/method/")
        if not sep or not app_id:
            if not sep and rest.endswith(b"/method"):
                raise DaprApiError(ERR_DIRECT_INVOKE, "method name is required", status=400)
            raise DaprApiError(ERR_DIRECT_INVOKE, _NO_APP_ID, status=404)
        target_path = b"/" + method + (b"?" + query if query else b"")
        return await self._invoke(request, app_id_text(app_id, percent_encoded=True), target_path)

    async def _invoke(self, request: Request, target: str, target_path: bytes) -> Response:
        app_id, namespace = split_app_id(target, self.runtime.namespace)
        return await self.invoker.invoke(request, app_id, namespace, target_path)


def _clean(path: bytes) -> bytes:
    """go-chi's cleaning: `//` collapsed, a trailing `/` dropped (but not from `/`)."""
    while b"//" in path:
        path = path.replace(b"//", b"/")
    if len(path) > 1 and path.endswith(b"/"):
        path = path[:-1]
    return path
