"""Service invocation: name the target, reach its sidecar (or our own app), stamp Dapr's headers."""

from __future__ import annotations

import logging
import re
import time

import trio

from filters.dapr.params import BadParam, path_param, printable
from filters.tracing.body import EndingBody
from proxy.discovery.base import ResolutionError
from proxy.discovery.base import split_app_id as split_key
from proxy.grpc.framing import DEFAULT_MAX_MESSAGE_SIZE
from proxy.grpc.metadata import is_grpc_content_type
from proxy.http.errors import DaprApiError, ProxyError, UpstreamConnectFailure
from proxy.http.model import Body, BytesBody, EmptyBody, Headers, Request, Response, header_get
from proxy.sidecar.runtime import SidecarRuntime
from proxy.upstream.outgoing import SMALL_BODY

log = logging.getLogger("meshwire.invoke")

ERR_DIRECT_INVOKE = "ERR_DIRECT_INVOKE"
# Dapr's built-in service retries: constant 1 s, 3 retries, only when the request provably never
# reached the target (the connection to its sidecar could not be made).
BUILTIN_RETRIES = 3
BUILTIN_BACKOFF = 1.0

# Stamped by the sidecars, so never taken from the caller (Dapr strips these before stamping).
CALLER_APP_ID = b"dapr-caller-app-id"
CALLER_NAMESPACE = b"dapr-caller-namespace"
CALLEE_APP_ID = b"dapr-callee-app-id"
CALLEE_NAMESPACE = b"dapr-callee-namespace"  # internal hop only
APP_ID_HEADER = b"dapr-app-id"
API_TOKEN = b"dapr-api-token"
APP_PATH_LABEL = "/*"  # bounded: the app's own paths are not labels
_STAMPED = frozenset({CALLER_APP_ID, CALLER_NAMESPACE, CALLEE_APP_ID, CALLEE_NAMESPACE})
MAX_APP_ID = 253  # app.namespace: a DNS name's length at most
_ILLEGAL_IN_APP_ID = re.compile(r"[/\\\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def split_app_id(text: str, default_namespace: str) -> tuple[str, str]:
    """`app` or `app.namespace` (name resolution's rule), as Dapr's API error when invalid.
    The one check every invocation target passes (HTTP path and header, gRPC): no `/`, `\\`,
    whitespace or control characters, which no app id holds and which would otherwise reach
    name resolution, headers and logs."""
    if not text or len(text) > MAX_APP_ID or _ILLEGAL_IN_APP_ID.search(text):
        raise invalid_app_id(text)
    try:
        return split_key(text, default_namespace)
    except ValueError:
        raise invalid_app_id(text) from None


def app_id_text(raw: bytes, *, percent_encoded: bool = False) -> str:
    """An app id from the wire (a URL path segment, a header): UTF-8 or 400."""
    try:
        return path_param(raw) if percent_encoded else raw.decode("utf-8")
    except (BadParam, UnicodeDecodeError):
        raise invalid_app_id(raw) from None


def invalid_app_id(app_id: str | bytes) -> DaprApiError:
    shown = printable(app_id[:MAX_APP_ID])
    return DaprApiError(
        ERR_DIRECT_INVOKE, f"failed to invoke, id: {shown}, err: invalid app id", status=400
    )


def without(headers: Headers, names: frozenset[bytes]) -> Headers:
    return [h for h in headers if h[0] not in names]


def invoke_failed(
    app_id: str, detail: str, *, status: int = 500, flag: str | None = None
) -> DaprApiError:
    return DaprApiError(
        ERR_DIRECT_INVOKE,
        f"failed to invoke, id: {app_id}, err: {detail}",
        status=status,
        flag=flag,
    )


class Invoker:
    """Sends an invocation to a target app: our own app directly, others through their sidecar."""

    def __init__(self, runtime: SidecarRuntime) -> None:
        self.runtime = runtime

    async def invoke(
        self, request: Request, target: str, namespace: str, target_path: bytes
    ) -> Response:
        # Hop-by-hop fields never get this far: every listener's connection manager ends them
        # before any terminal (filters/connection), and gRPC calls come over HTTP/2.
        runtime = self.runtime
        request.target = target_path
        request.headers = without(request.headers, _STAMPED | {API_TOKEN, APP_ID_HEADER})
        if target == runtime.app_id and namespace == runtime.namespace:
            return await self.to_app(request, runtime.app_id, runtime.namespace)
        request.headers.append((CALLEE_APP_ID, target.encode()))
        request.headers.append((CALLEE_NAMESPACE, namespace.encode()))
        stamp_forwarded(request.headers, runtime.config.advertise_host, runtime.hostname)
        return await self._to_peer(request, target, namespace)

    async def to_app(self, request: Request, caller: str, caller_namespace: str) -> Response:
        """Our app, with Dapr's headers: who called, who is called, and the app token."""
        runtime = self.runtime
        app = runtime.app
        if app is None:
            raise invoke_failed(runtime.app_id, "app channel is not initialized (no --app-port)")
        headers = without(request.headers, _STAMPED)
        headers.append((CALLER_APP_ID, caller.encode()))
        headers.append((CALLER_NAMESPACE, caller_namespace.encode()))
        headers.append((CALLEE_APP_ID, runtime.app_id.encode()))
        headers = without(headers, frozenset({API_TOKEN}))
        if runtime.app_token is not None:
            headers.append((API_TOKEN, runtime.app_token.encode()))
        request.headers = headers
        started = time.monotonic()
        sent = request.body = EndingBody(request.body)
        method = request.method.decode("latin-1")
        slots = runtime.app_slots  # --app-max-concurrency: held until the app's answer ends
        if slots is not None:
            await slots.acquire()
        try:
            if _on_invoke(runtime, request):
                # A gRPC app's AppCallback: protobuf loads with the first such call.
                from filters.dapr.app_callback import call_on_invoke

                response = await call_on_invoke(app.send, request, DEFAULT_MAX_MESSAGE_SIZE)
            else:
                response = await app.send(request)
        except BaseException as exc:
            if slots is not None:
                slots.release()
            if isinstance(exc, ProxyError):
                raise invoke_failed(
                    runtime.app_id, f"error invoking app channel: {exc.message}", flag=exc.flag
                ) from exc
            raise
        status = response.status

        def ended(error: BaseException | None) -> None:
            if slots is not None:
                slots.release()
            elapsed = (time.monotonic() - started) * 1000
            runtime.metrics.client(
                method, APP_PATH_LABEL, status, elapsed, sent.count, received.count
            )

        received = response.body = EndingBody(response.body, ended)
        return response

    async def _to_peer(self, request: Request, target: str, namespace: str) -> Response:
        """Under the app's Resiliency policy when one targets it, else Dapr's built-in retries."""
        body = await _replayable(request.body)
        started = time.monotonic()
        resilience = self.runtime.resilience_for(target)
        if resilience is None:
            response = await self._builtin_retries(request, target, namespace, body)
        else:

            async def attempt() -> Response:
                return await self._attempt(request, target, namespace, body)

            response = await resilience.run(attempt, replayable=body is not None)
        elapsed = (time.monotonic() - started) * 1000
        self.runtime.metrics.invocation_sent(target, response.status, elapsed)
        return response

    async def _builtin_retries(
        self, request: Request, target: str, namespace: str, body: bytes | None
    ) -> Response:
        """Dapr's DaprBuiltInServiceRetries: only when the target's sidecar was unreachable."""
        failures: list[str] = []
        for attempt in range(BUILTIN_RETRIES + 1):
            try:
                return await self._attempt(request, target, namespace, body)
            except _Unreachable as exc:
                # Refused before anything was sent: even a streamed body is still untouched.
                failures.append(exc.detail)
                if attempt < BUILTIN_RETRIES and not exc.others:
                    await trio.sleep(BUILTIN_BACKOFF)
        raise invoke_failed(
            target,
            f"failed to invoke target {target} after {BUILTIN_RETRIES} retries: {failures[-1]}",
            flag="UF",
        )

    async def _attempt(
        self, request: Request, target: str, namespace: str, body: bytes | None
    ) -> Response:
        """One try: resolve, pick an instance in rotation, send over its mTLS connection."""
        peers = self.runtime.peers
        try:
            instances = await peers.candidates(target, namespace)
        except ResolutionError as exc:
            raise invoke_failed(target, f"name resolution failed: {exc}") from exc
        if not instances:
            raise invoke_failed(target, f"couldn't find service: {target}.{namespace}", flag="NR")
        instance = peers.pick(instances, target, namespace)
        if body is not None:
            request.body = BytesBody(body) if body else EmptyBody()
        try:
            response = await peers.cluster(instance).send(request)
        except UpstreamConnectFailure as exc:
            peers.outliers.record(instance, False)
            self.runtime.resolver.invalidate(target, namespace)  # as Dapr evicts its cache
            raise _Unreachable(target, exc.message, others=len(instances) > 1) from exc
        except ProxyError as exc:
            raise invoke_failed(target, exc.message, flag=exc.flag) from exc
        peers.outliers.record(instance, response.status < 500)
        return response


def stamp_forwarded(headers: Headers, ip: str, hostname: str) -> None:
    """What daprd adds to a call leaving for another sidecar, appended to existing values:
    X-Forwarded-For (our host IP), X-Forwarded-Host (our host name) and Forwarded."""
    forwarded = f"for={ip};by={ip};host={hostname}"
    for name, value in (
        (b"x-forwarded-for", ip),
        (b"x-forwarded-host", hostname),
        (b"forwarded", forwarded),
    ):
        for i, (key, old) in enumerate(headers):
            if key == name:
                headers[i] = (name, old + b", " + value.encode())
                break
        else:
            headers.append((name, value.encode()))


class _Unreachable(DaprApiError):
    """The target's sidecar could not be reached: nothing was sent, a retry is always safe."""

    def __init__(self, target: str, detail: str, *, others: bool) -> None:
        super().__init__(
            ERR_DIRECT_INVOKE, f"failed to invoke, id: {target}, err: {detail}", flag="UF"
        )
        self.detail = detail
        self.others = others


def _on_invoke(runtime: SidecarRuntime, request: Request) -> bool:
    """A gRPC app takes HTTP-shaped invocations through AppCallback/OnInvoke; gRPC calls (the
    gRPC proxy's) go to it as they are."""
    app = runtime.config.app
    return (
        app is not None
        and app.protocol == "grpc"
        and not is_grpc_content_type(header_get(request.headers, b"content-type"))
    )


async def _replayable(body: Body) -> bytes | None:
    """Small or in-memory bodies as bytes (so a retry can resend them); None for streams."""
    kind = type(body)
    if kind is EmptyBody:
        return b""
    if kind is not BytesBody and (body.length is None or body.length > SMALL_BODY):
        return None
    parts = []
    while chunk := await body.read():
        parts.append(chunk)
    return b"".join(parts)
