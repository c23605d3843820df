"""build(Config) -> App: compiles routes, chains, pools, TLS contexts and stats once; no sockets."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config import schema
from exporters.telemetry import Telemetry
from filters.connection.request_id import ConnectionManagerFilter
from filters.registry import BuildContext, build_filter, build_terminal, is_terminal
from proxy.chain import Filter, Handler, build_chain
from proxy.http.rescue import RescueFilter
from proxy.http1.codec import AUTO, Codec
from proxy.http1.codec import choose as choose_codec
from proxy.routing import RouteTable
from proxy.stats import ListenerStats, Stats
from proxy.upstream.manager import ClusterManager

if TYPE_CHECKING:
    from proxy.sidecar.role import SidecarRole
    from proxy.sidecar.runtime import SidecarRuntime


@dataclass(frozen=True)
class ListenerSpec:
    """One listener, ready to bind: its chain, limits, TLS context and counters."""

    config: schema.Listener
    host: str
    port: int
    handler: Handler
    stats: ListenerStats
    ssl_context: ssl.SSLContext | None
    protocols: frozenset[str]


@dataclass
class App:
    """Everything the server needs; built once per config, swapped whole on reload."""

    config: schema.Config
    stats: Stats
    clusters: ClusterManager
    listeners: list[ListenerSpec]
    admin: tuple[str, int] | None
    telemetry: Telemetry
    owns_telemetry: bool  # built here from config, so the server closes it on shutdown
    sidecar: SidecarRuntime | None = None  # Dapr mode: identity, name resolution, peers
    codec: Codec = AUTO  # HTTP/1.1, downstream and upstream
    started_at: float = field(default_factory=time.time)


def build_listener_chain(
    listener: schema.Listener,
    clusters: ClusterManager,
    telemetry: Telemetry | None = None,
    sidecar: SidecarRuntime | None = None,
    stats: Stats | None = None,
) -> Handler:
    """The order of every listener's chain, written once:

    1. rescue — first, so any exception below becomes a typed response, never a traceback;
    2. connection manager — hop-by-hop fields end, then request id and x-forwarded-* are set,
       before anything logs or forwards;
    3. configured filters, in the order the YAML lists them;
    4. the terminal (router) — validation guarantees it is last and unique.
    """
    ctx = BuildContext(
        routes=RouteTable.build(listener.routes),
        clusters=clusters,
        telemetry=telemetry,
        sidecar=sidecar,
        stats=stats,
    )
    configured = listener.filters[:-1]
    terminal_cfg = listener.filters[-1]
    if not is_terminal(terminal_cfg.__struct_config__.tag):  # type: ignore[arg-type]
        raise ValueError(f"listener {listener.name!r}: the last filter must be terminal")
    chain: list[Filter] = [
        RescueFilter(),
        ConnectionManagerFilter(
            generate_request_id=listener.generate_request_id,
            use_remote_address=listener.use_remote_address,
            xff_num_trusted_hops=listener.xff_num_trusted_hops,
        ),
    ]
    chain.extend(build_filter(f, ctx) for f in configured)
    return build_chain(chain, build_terminal(terminal_cfg, ctx))


def server_ssl_context(tls: schema.TlsContext, protocols: frozenset[str]) -> ssl.SSLContext:
    """Downstream TLS: ALPN offers h2 only if the listener speaks it."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        ctx.load_verify_locations(tls.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    alpn = [p for p in tls.alpn if p != "h2" or "h2c" in protocols]
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def build(
    config: schema.Config,
    telemetry: Telemetry | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    sidecar_role: SidecarRole | None = None,
) -> App:
    """Everything from config, once. A given `telemetry` (shared, e.g. by tests) stays the
    caller's to close; otherwise one is built from `config.telemetry` and owned by the App.
    `sidecar_role`: a --concurrency worker's share of the sidecar (default: all of it)."""
    stats = Stats()
    owns_telemetry = telemetry is None
    if telemetry is None:
        telemetry = Telemetry.build(config.telemetry, stats)
    codec = choose_codec(config.codec)
    clusters = ClusterManager(config.clusters, stats, telemetry, codec)
    sidecar: SidecarRuntime | None = None
    if config.sidecar is not None:
        from proxy.sidecar.role import SidecarRole
        from proxy.sidecar.runtime import SidecarRuntime

        sidecar = SidecarRuntime(
            config.sidecar,
            clusters,
            stats,
            telemetry,
            os.environ if environ is None else environ,
            sidecar_role or SidecarRole(),
        )
    listeners: list[ListenerSpec] = []
    for lc in config.listeners:
        host, port = schema.parse_address(lc.address)
        protocols = frozenset(lc.protocols)
        ssl_context: ssl.SSLContext | None = None
        if lc.sidecar_mtls:
            if sidecar is None:
                raise ValueError(f"listener {lc.name!r}: sidecar_mtls needs the `sidecar` section")
            ssl_context = sidecar.identity.server_context()
        elif lc.tls:
            ssl_context = server_ssl_context(lc.tls, protocols)
        listeners.append(
            ListenerSpec(
                config=lc,
                host=host,
                port=port,
                handler=build_listener_chain(lc, clusters, telemetry, sidecar, stats),
                stats=ListenerStats(stats, lc.stat_prefix or lc.name),
                ssl_context=ssl_context,
                protocols=protocols,
            )
        )
    telemetry.observe_active_requests(
        {spec.config.name: spec.stats.rq_active for spec in listeners}
    )
    admin = schema.parse_address(config.admin.address) if config.admin else None
    return App(
        config=config,
        stats=stats,
        clusters=clusters,
        listeners=listeners,
        admin=admin,
        telemetry=telemetry,
        owns_telemetry=owns_telemetry,
        sidecar=sidecar,
        codec=codec,
    )
