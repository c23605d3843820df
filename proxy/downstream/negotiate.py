"""Pick the codec for an accepted connection: ALPN "h2", the h2c preface, or HTTP/1.1."""

from __future__ import annotations

from functools import partial

import trio

from proxy.downstream.common import PEER_GONE, counted_connection, deadline_after, run_guarded
from proxy.downstream.context import ConnectionContext
from proxy.downstream.h1 import run_h1, serve_h1
from proxy.downstream.h2 import run_h2, serve_h2

__all__ = ["PREFACE", "serve_connection", "serve_h1", "serve_h2"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def _sniff(stream: trio.abc.Stream, ctx: ConnectionContext) -> bytes | None:
    """Read until the bytes either are or cannot be the h2c preface; None if nothing came."""
    buf = b""
    async with trio.open_nursery() as nursery:

        async def stop_when_draining() -> None:
            await ctx.draining.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_when_draining)
        with trio.CancelScope(deadline=deadline_after(ctx.limits.idle_timeout)):
            try:
                while len(buf) < len(PREFACE) and PREFACE.startswith(buf):
                    data = await stream.receive_some(65536)
                    if not data:
                        buf = b""
                        break
                    buf += data
            except PEER_GONE:
                buf = b""
        nursery.cancel_scope.cancel()
    return buf or None


async def serve_connection(stream: trio.abc.Stream, ctx: ConnectionContext) -> None:
    """Serve one accepted connection to its end; peer misbehaviour never raises out of here."""
    with counted_connection(ctx.stats):
        await run_guarded(partial(_dispatch, stream, ctx), stream, ctx)


async def _dispatch(stream: trio.abc.Stream, ctx: ConnectionContext) -> None:
    """ALPN decides over TLS; otherwise the first bytes do (the h2c preface or HTTP/1)."""
    if ctx.alpn == "h2":
        await run_h2(stream, ctx)
        return
    initial = await _sniff(stream, ctx)
    if initial is None:
        return
    if initial.startswith(PREFACE):
        if "h2c" in ctx.protocols:
            await run_h2(stream, ctx, initial)
            return
    elif "http1" in ctx.protocols:
        await run_h1(stream, ctx, initial)
        return
    ctx.stats.cx_protocol_error.inc()
