"""Filter config type → factory; the set of terminal filters lives in filters.terminal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config import schema
from filters.buffer.filter import BufferFilter
from filters.headers.filter import HeadersFilter
from filters.router.terminal import Router
from filters.terminal import TERMINAL_FILTERS, is_terminal
from proxy.chain import Filter, Handler
from proxy.routing import RouteTable
from proxy.upstream.manager import ClusterManager


@dataclass(frozen=True)
class BuildContext:
    """What factories may use: the listener's compiled routes and the cluster manager."""

    routes: RouteTable
    clusters: ClusterManager


def _router(cfg: schema.RouterFilter, ctx: BuildContext) -> Handler:
    return Router(ctx.routes, ctx.clusters)


def _buffer(cfg: schema.BufferFilter, ctx: BuildContext) -> Filter:
    return BufferFilter(cfg.max_request_bytes)


def _headers(cfg: schema.HeadersFilter, ctx: BuildContext) -> Filter:
    return HeadersFilter(cfg.request_add, cfg.request_remove, cfg.response_add, cfg.response_remove)


_FILTERS: dict[type, Callable[[object, BuildContext], Filter]] = {
    schema.BufferFilter: _buffer,  # type: ignore[dict-item]
    schema.HeadersFilter: _headers,  # type: ignore[dict-item]
}
__all__ = ["TERMINAL_FILTERS", "BuildContext", "build_filter", "build_terminal", "is_terminal"]

_TERMINALS: dict[type, Callable[[object, BuildContext], Handler]] = {
    schema.RouterFilter: _router,  # type: ignore[dict-item]
}


def build_filter(cfg: schema.FilterConfig, ctx: BuildContext) -> Filter:
    return _FILTERS[type(cfg)](cfg, ctx)


def build_terminal(cfg: schema.FilterConfig, ctx: BuildContext) -> Handler:
    return _TERMINALS[type(cfg)](cfg, ctx)
