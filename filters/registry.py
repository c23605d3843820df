"""Filter config type → factory; the set of terminal filters lives in filters.terminal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config import schema
from exporters.telemetry import Telemetry
from filters.buffer.filter import BufferFilter
from filters.deferred import Deferred
from filters.headers.filter import HeadersFilter
from filters.router.terminal import Router
from filters.terminal import TERMINAL_FILTERS, is_terminal
from filters.tracing.filter import TracingFilter
from proxy.chain import Filter, Handler
from proxy.http.model import Request, Response
from proxy.routing import RouteTable
from proxy.stats import RetryStats, Stats
from proxy.upstream.manager import ClusterManager

if TYPE_CHECKING:
    from proxy.sidecar.runtime import SidecarRuntime


@dataclass(frozen=True)
class BuildContext:
    """What factories may use: the listener's compiled routes, the cluster manager, telemetry."""

    routes: RouteTable
    clusters: ClusterManager
    telemetry: Telemetry | None = None
    sidecar: SidecarRuntime | None = None  # Dapr mode only
    stats: Stats | None = None  # the App's store, so filters' counters reach the admin port


def _sidecar(ctx: BuildContext, tag: str) -> SidecarRuntime:
    if ctx.sidecar is None:
        raise ValueError(f"the {tag} filter needs the top-level `sidecar` section")
    return ctx.sidecar


def _dapr_api(cfg: schema.DaprApiFilter, ctx: BuildContext) -> Handler:
    from filters.dapr.api import DaprApi

    return DaprApi(_sidecar(ctx, "dapr_api"), cfg.max_body_size)


def _dapr_grpc(cfg: schema.DaprGrpcFilter, ctx: BuildContext) -> Handler:
    runtime = _sidecar(ctx, "dapr_grpc")

    def build() -> Handler:
        from filters.dapr.grpc_api import DaprGrpc  # imported by Deferred, off the loop

        return DaprGrpc(runtime, cfg.max_message_size)

    # Built by the first gRPC call: a sidecar whose app never calls it never loads protobuf.
    return Deferred(build, ["filters.dapr.grpc_api"])


def _dapr_internal(cfg: schema.DaprInternalFilter, ctx: BuildContext) -> Handler:
    from filters.dapr.internal import DaprInternal

    return DaprInternal(_sidecar(ctx, "dapr_internal"))


def _router(cfg: schema.RouterFilter, ctx: BuildContext) -> Handler:
    return Router(ctx.routes, ctx.clusters)


def _buffer(cfg: schema.BufferFilter, ctx: BuildContext) -> Filter:
    return BufferFilter(cfg.max_request_bytes)


def _headers(cfg: schema.HeadersFilter, ctx: BuildContext) -> Filter:
    return HeadersFilter(cfg.request_add, cfg.request_remove, cfg.response_add, cfg.response_remove)


def _retry(cfg: schema.RetryFilter, ctx: BuildContext) -> Filter:
    from filters.retry.filter import RetryFilter

    return RetryFilter.from_config(cfg, RetryStats(ctx.stats or Stats(), cfg.stat_prefix))


class _PassThrough:
    """Tracing with no span exporter: the incoming context travels on unchanged."""

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        return await next(request)


def _tracing(cfg: schema.TracingFilter, ctx: BuildContext) -> Filter:
    if ctx.telemetry is None or ctx.telemetry.spans is None:
        return _PassThrough()
    templates = {entry.name: entry.template for entry in ctx.routes.entries}
    return TracingFilter(ctx.telemetry.spans, cfg.sampling_rate, cfg.propagators, templates)


_FILTERS: dict[type, Callable[[object, BuildContext], Filter]] = {
    schema.BufferFilter: _buffer,  # type: ignore[dict-item]
    schema.HeadersFilter: _headers,  # type: ignore[dict-item]
    schema.TracingFilter: _tracing,  # type: ignore[dict-item]
    schema.RetryFilter: _retry,  # type: ignore[dict-item]
}
__all__ = ["TERMINAL_FILTERS", "BuildContext", "build_filter", "build_terminal", "is_terminal"]

_TERMINALS: dict[type, Callable[[object, BuildContext], Handler]] = {
    schema.RouterFilter: _router,  # type: ignore[dict-item]
    schema.DaprApiFilter: _dapr_api,  # type: ignore[dict-item]
    schema.DaprGrpcFilter: _dapr_grpc,  # type: ignore[dict-item]
    schema.DaprInternalFilter: _dapr_internal,  # type: ignore[dict-item]
}


def build_filter(cfg: schema.FilterConfig, ctx: BuildContext) -> Filter:
    return _FILTERS[type(cfg)](cfg, ctx)


def build_terminal(cfg: schema.FilterConfig, ctx: BuildContext) -> Handler:
    return _TERMINALS[type(cfg)](cfg, ctx)
