"""Opening upstream connections: TCP (+ TLS with ALPN) under the cluster's connect timeout."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable

import trio

from config.schema import Cluster, UpstreamTls
from proxy.http.errors import UpstreamConnectFailure
from proxy.quick_socket import QuickStream
from proxy.stats import ClusterStats
from proxy.tls.stream import TlsStream

# Bound on any cleanup await (closing a socket, TLS close_notify) once work is abandoned.
CLOSE_GRACE = 1.0


async def close_quietly(stream: trio.abc.AsyncResource) -> None:
    """Close without waiting on the peer and without raising, even inside a cancelled scope."""
    with trio.move_on_after(CLOSE_GRACE, shield=True), contextlib.suppress(Exception):
        await trio.aclose_forcefully(stream)


def build_ssl_context(tls: UpstreamTls, alpn: list[str]) -> ssl.SSLContext:
    """A client context from the cluster's TLS settings (system trust store unless ca_file)."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.set_alpn_protocols(alpn)
    return ctx


# Checks a handshaken peer (e.g. its SPIFFE id); raises UpstreamConnectFailure to refuse it.
PeerCheck = Callable[[TlsStream], None]


class Connector:
    """Opens connections to one cluster's hosts; the SSL context is built once, here.

    A sidecar passes its own `ssl_context` (its workload certificate, rotated in place) and a
    `check_peer` that verifies the other sidecar's identity after the handshake.
    """

    __slots__ = ("_alpn_h2", "_check_peer", "_sni", "_ssl", "_stats", "_timeout")

    def __init__(
        self,
        cluster: Cluster,
        stats: ClusterStats,
        *,
        ssl_context: ssl.SSLContext | None = None,
        check_peer: PeerCheck | None = None,
    ) -> None:
        self._stats = stats
        self._timeout = float(cluster.connect_timeout)
        self._check_peer = check_peer
        tls = cluster.tls
        if tls is None and cluster.protocol == "h2":
            tls = UpstreamTls()
        self._alpn_h2 = cluster.protocol == "h2"
        self._sni = tls.sni if tls is not None else None
        if ssl_context is not None:
            self._ssl: ssl.SSLContext | None = ssl_context
        else:
            self._ssl = (
                build_ssl_context(tls, ["h2"] if self._alpn_h2 else ["http/1.1"])
                if tls is not None
                else None
            )

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A connected (and handshaken) stream, or UpstreamConnectFailure."""
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(self._timeout):
                tcp = await trio.open_tcp_stream(host, port)
                tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stream = QuickStream.wrap(tcp)
                if self._ssl is not None:
                    tls = stream = TlsStream(tcp, self._ssl, server_hostname=self._sni or host)
                    await tls.do_handshake()
                    if self._alpn_h2 and tls.selected_alpn_protocol() != "h2":
                        raise UpstreamConnectFailure(f"{host}:{port} did not negotiate h2 (ALPN)")
                    if self._check_peer is not None:
                        self._check_peer(tls)
        except trio.TooSlowError:
            self._stats.cx_connect_timeout.inc()
            if stream is not None:
                await close_quietly(stream)
            raise UpstreamConnectFailure(
                f"connect to {host}:{port} timed out after {self._timeout}s"
            ) from None
        except (OSError, ssl.SSLError, trio.BrokenResourceError, UpstreamConnectFailure) as exc:
            self._stats.cx_connect_fail.inc()
            if stream is not None:
                await close_quietly(stream)
            if isinstance(exc, UpstreamConnectFailure):
                raise
            raise UpstreamConnectFailure(f"connect to {host}:{port} failed: {exc}") from exc
        except BaseException:
            if stream is not None:
                await close_quietly(stream)
            raise
        return stream
