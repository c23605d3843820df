"""What a downstream codec knows about its connection, handed in by the listener."""

from __future__ import annotations

from collections.abc import Callable

import trio

from config.schema import Limits
from proxy.chain import Handler
from proxy.downstream.hangup import HangupSweeper
from proxy.downstream.idle import IdleConnections
from proxy.http.model import Request
from proxy.http1.codec import AUTO, Codec
from proxy.stats import ListenerStats

# Called once per request after its response was fully written or failed: the request, the
# status sent (or the one that would have been sent), and the exception if the exchange failed.
OnComplete = Callable[[Request, int, BaseException | None], None]

ALL_PROTOCOLS: frozenset[str] = frozenset({"http1", "h2c"})


class ConnectionContext:
    """Everything a codec needs beyond the byte stream; one per accepted connection.

    `draining` is set by the server on shutdown: HTTP/1.1 answers with `Connection: close` and
    closes after the in-flight response; HTTP/2 sends GOAWAY and finishes open streams.
    `protocols` is what a cleartext connection may speak ("http1", "h2c"); TLS connections that
    negotiated "h2" by ALPN are served as HTTP/2 regardless. `hangup`, when given, lets the
    HTTP/1.1 codec notice a client that leaves while its request is in flight (plain TCP only).
    `idle` is the listener's registry of connections waiting for a request (overload closes the
    oldest); a context made without a listener gets one of its own. `codec` parses HTTP/1.1.
    """

    __slots__ = (
        "alpn",
        "codec",
        "draining",
        "handler",
        "hangup",
        "idle",
        "limits",
        "on_complete",
        "peer",
        "peer_identity",
        "protocols",
        "stats",
        "tls",
    )

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        stats: ListenerStats,
        *,
        peer: str = "",
        tls: bool = False,
        alpn: str | None = None,
        peer_identity: str | None = None,
        draining: trio.Event | None = None,
        protocols: frozenset[str] = ALL_PROTOCOLS,
        on_complete: OnComplete | None = None,
        hangup: HangupSweeper | None = None,
        idle: IdleConnections | None = None,
        codec: Codec = AUTO,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.stats = stats
        self.peer = peer
        self.tls = tls
        self.alpn = alpn
        self.peer_identity = peer_identity
        self.draining = draining if draining is not None else trio.Event()
        self.protocols = protocols
        self.on_complete = on_complete
        self.hangup = hangup
        self.codec = codec
        if idle is None:
            idle = IdleConnections(
                limits.max_connections, limits.overload_threshold, stats.cx_active
            )
        self.idle = idle
