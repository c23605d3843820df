"""Pick the codec for an accepted connection: ALPN "h2", the h2c preface, or HTTP/1.1."""

from __future__ import annotations

import contextlib
from functools import partial

import trio
from hyperframe.frame import GoAwayFrame, SettingsFrame

from proxy.downstream.common import PEER_GONE, counted_connection, deadline_after, run_guarded
from proxy.downstream.context import ConnectionContext
from proxy.downstream.h1 import run_h1, serve_h1
from proxy.downstream.h2 import run_h2, serve_h2

__all__ = ["PREFACE", "serve_connection", "serve_h1", "serve_h2"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PRI_LINE = PREFACE[:14]  # enough to know the client means HTTP/2
# The server preface (an empty SETTINGS, RFC 9113 §3.4), then GOAWAY(PROTOCOL_ERROR).
BAD_PREFACE_REPLY = SettingsFrame(0).serialize() + GoAwayFrame(0, error_code=0x1).serialize()


async def _sniff(stream: trio.abc.Stream, ctx: ConnectionContext) -> bytes | None:
    """Read until the bytes either are or cannot be the h2c preface; None if nothing came."""
    buf = b""
    async with trio.open_nursery() as nursery:

        async def stop_when_draining() -> None:
            await ctx.draining.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_when_draining)
        # A head's first bytes: header_read_timeout (scaled under load), and at max_connections
        # the listener may close this connection for a new one, as it may a silent one.
        idle = ctx.idle
        scope = idle.open(ctx.limits.header_read_timeout)
        try:
            with scope:
                while len(buf) < len(PREFACE) and PREFACE.startswith(buf):
                    data = await stream.receive_some(65536)
                    if not data:
                        buf = b""
                        break
                    buf += data
        except PEER_GONE:
            buf = b""
        finally:
            idle.close(scope)
        if scope.cancelled_caught:
            buf = b""  # a stalled preface (or TLS client): nothing to serve
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
    elif "h2c" in ctx.protocols and _bad_preface(initial):
        # RFC 9113 §3.4: an invalid connection preface is a connection error of type
        # PROTOCOL_ERROR. Its GOAWAY "MAY be omitted", but this client spoke HTTP/2 far enough
        # to read one, and h2spec expects it.
        ctx.stats.cx_protocol_error.inc()
        await _send_quietly(stream, ctx, BAD_PREFACE_REPLY)
        return
    elif "http1" in ctx.protocols:
        await run_h1(stream, ctx, initial)
        return
    ctx.stats.cx_protocol_error.inc()


def _bad_preface(initial: bytes) -> bool:
    """The client began the h2 preface, then sent something else."""
    return initial.startswith(PRI_LINE) and not PREFACE.startswith(initial)


async def _send_quietly(stream: trio.abc.Stream, ctx: ConnectionContext, data: bytes) -> None:
    """Best effort: a peer that stopped reading costs at most the stream idle timeout."""
    with (
        trio.CancelScope(deadline=deadline_after(ctx.limits.stream_idle_timeout)),
        contextlib.suppress(*PEER_GONE),
    ):
        await stream.send_all(data)
