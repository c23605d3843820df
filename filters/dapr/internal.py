"""Terminal: invocations from other sidecars — who called (from mTLS), may they, then the app."""

from __future__ import annotations

from filters.dapr.invoke import CALLEE_APP_ID, CALLEE_NAMESPACE, Invoker, invoke_failed
from proxy.http.model import Request, Response, header_get
from proxy.sidecar.runtime import SidecarRuntime
from proxy.tls.spiffe import SpiffeId


class DaprInternal:
    """The caller is the SPIFFE id of the verified client certificate, never a header."""

    def __init__(self, runtime: SidecarRuntime) -> None:
        self.runtime = runtime
        self.invoker = Invoker(runtime)

    async def __call__(self, request: Request) -> Response:
        runtime = self.runtime
        callee = header_get(request.headers, CALLEE_APP_ID)
        callee_ns = header_get(request.headers, CALLEE_NAMESPACE)
        if callee is not None and (
            callee.decode("latin-1") != runtime.app_id
            or (callee_ns is not None and callee_ns.decode("latin-1") != runtime.namespace)
        ):
            raise invoke_failed(
                callee.decode("latin-1"), "this sidecar serves another app", status=404
            )
        identity = request.info.peer_identity
        try:
            caller = SpiffeId.parse(identity) if identity else None
        except ValueError:
            caller = None
        if caller is None or caller.trust_domain != runtime.spiffe_id.trust_domain:
            raise invoke_failed(
                runtime.app_id, "caller has no identity in this trust domain", status=403
            )
        decision = runtime.access.decide(caller, request.method.decode("latin-1"), request.path)
        if not decision.allowed:
            raise invoke_failed(
                runtime.app_id,
                f"access control policy has denied access to id: {caller} operation: "
                f"{request.path.decode('latin-1')} verb: {request.method.decode('latin-1')}",
                status=403,
            )
        runtime.metrics.invocation_received(caller.app_id)
        return await self.invoker.to_app(request, caller.app_id, caller.namespace)
