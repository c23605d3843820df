"""Pieces both codecs share: handler guard, per-request completion, deadlines, hop-by-hop names."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Protocol

import trio

from config.schema import Limits
from proxy.downstream.context import ConnectionContext
from proxy.http.errors import ProxyError
from proxy.http.model import CONNECTION_SPECIFIC, Body, Headers, Request, Response, StreamInfo
from proxy.http.rescue import rescue
from proxy.http.target import to_origin_form
from proxy.stats import ListenerStats

log = logging.getLogger("meshwire.downstream")

HOP_BY_HOP = CONNECTION_SPECIFIC  # what a downstream codec strips before framing a response

REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}

PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


@contextlib.contextmanager
def counted_connection(stats: ListenerStats) -> Iterator[None]:
    """Count one downstream connection for as long as the block runs."""
    stats.cx_total.inc()
    stats.cx_active.inc()
    try:
        yield
    finally:
        stats.cx_active.dec()


async def run_guarded(
    serve: Callable[[], Awaitable[None]], stream: trio.abc.Stream, ctx: ConnectionContext
) -> None:
    """Run a codec to the end of its connection: close the stream, never raise for the peer."""
    try:
        await serve()
    except Exception:
        log.exception("connection from %s failed", ctx.peer)
    finally:
        await trio.aclose_forcefully(stream)


def deadline_after(seconds: float) -> float:
    """An absolute trio deadline; zero or less means no limit."""
    return trio.current_time() + seconds if seconds > 0 else math.inf


class PacedBody(Protocol):
    """A request body read off a connection: when its pace began (0: not yet), bytes so far."""

    due: float
    received: int


def body_deadline(limits: Limits, body: PacedBody) -> float:
    """When a wait for request body bytes gives up: after body_idle_timeout with none, or when
    the body falls below min_body_rate once its first body_idle_timeout is over (a drip of a
    byte every few seconds that would otherwise hold an upstream slot indefinitely)."""
    idle = limits.body_idle_timeout
    if idle <= 0:
        return math.inf
    now = trio.current_time()
    if not body.due:
        body.due = now + idle
    return min(now + idle, body.due + body.received / limits.min_body_rate)


def new_request(
    ctx: ConnectionContext,
    method: bytes,
    target: bytes,
    headers: Headers,
    body: Body,
    authority: bytes,
    http_version: str,
) -> Request:
    if target[:1] != b"/" and (origin := to_origin_form(target, headers)) is not None:
        # The Host field is rewritten in `headers` itself: the HTTP/1.1 codec reads the
        # authority from it after this returns, and upstreams send it on.
        target, authority = origin
    info = StreamInfo(downstream_addr=ctx.peer, downstream_tls=ctx.tls)
    info.peer_identity = ctx.peer_identity
    return Request(
        method,
        target,
        headers,
        body,
        scheme=b"https" if ctx.tls else b"http",
        authority=authority,
        http_version=http_version,
        info=info,
    )


async def call_handler(ctx: ConnectionContext, request: Request) -> Response:
    """Run the chain; any exception it lets through still becomes a rendered response."""
    try:
        return await ctx.handler(request)
    except Exception as exc:
        return rescue(exc, request.info)


def note_failure(info: StreamInfo, exc: BaseException) -> None:
    """Record why a response could not be completed on the request's StreamInfo."""
    if isinstance(exc, ProxyError) and exc.flag:
        info.add_flag(exc.flag)


def complete(
    ctx: ConnectionContext, request: Request, status: int, exc: BaseException | None
) -> None:
    """Count the response and call the listener's completion hook exactly once."""
    stats = ctx.stats
    stats.response(status)
    if status == 413:
        stats.rq_too_large.inc()
    hook = ctx.on_complete
    if hook is not None:
        try:
            hook(request, status, exc)
        except Exception:
            log.exception("on_complete hook failed")
