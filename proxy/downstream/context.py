"""What a downstream codec knows about its connection, handed in by the listener."""

from __future__ import annotations

import trio

from config.schema import Limits
from proxy.chain import Handler
from proxy.stats import ListenerStats


class ConnectionContext:
    """Everything a codec needs beyond the byte stream; one per accepted connection.

    `draining` is set by the server on shutdown: HTTP/1.1 answers with `Connection: close` and
    closes after the in-flight response; HTTP/2 sends GOAWAY and finishes open streams.
    """

    __slots__ = ("alpn", "draining", "handler", "limits", "peer", "peer_identity", "stats", "tls")

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
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.stats = stats
        self.peer = peer
        self.tls = tls
        self.alpn = alpn
        self.peer_identity = peer_identity
        self.draining = draining if draining is not None else trio.Event()
