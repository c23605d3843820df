"""The typed, frozen meshwire configuration: listeners, routes, filters, clusters, admin."""

from __future__ import annotations

from typing import Literal

import msgspec

from config.base import Duration as Duration
from config.base import Frozen as _Frozen
from config.base import parse_address as parse_address
from config.sidecar import DaprApiFilter as DaprApiFilter
from config.sidecar import DaprGrpcFilter as DaprGrpcFilter
from config.sidecar import DaprInternalFilter as DaprInternalFilter
from config.sidecar import Sidecar as Sidecar

# --- listeners -------------------------------------------------------------------------------


class Limits(_Frozen, frozen=True):
    """Protective limits, on by default (DESIGN §7, Envoy's hardening defaults scaled down)."""

    max_header_bytes: int = 65536
    max_headers: int = 100
    max_request_body_bytes: int = 1048576  # only where a filter buffers a body (413 above it)
    # Slowloris and silent connections: a new connection's first byte (or TLS handshake) must
    # come this soon after accept, and each request head this soon after its first byte.
    header_read_timeout: Duration = Duration(10.0)
    idle_timeout: Duration = Duration(300.0)  # connection with no request in flight
    stream_idle_timeout: Duration = Duration(300.0)  # no bytes either way on a stream
    # Slow-body hold: a request body that stops (no bytes for this long) gets 408 and a close,
    # freeing its upstream slot (cluster max_requests). Well under stream_idle_timeout, which
    # must stay long for quiet responses (long polls); nginx's client_body_timeout is 60 s.
    body_idle_timeout: Duration = Duration(30.0)
    # Slow-body drip (a byte every few seconds): past its first body_idle_timeout a body must
    # average this many bytes per second (Apache's mod_reqtimeout MinRate is 500), else 408.
    min_body_rate: int = 500
    max_concurrent_streams: int = 100
    max_connections: int = 10000
    # Connection floods: past this share of max_connections, idle and first-byte timeouts
    # shrink (Envoy's reduce_timeouts), to a tenth at the cap; at the cap the longest-idle
    # connection is closed to admit a new one (refused only when every one has a request).
    overload_threshold: float = 0.8
    # One client holding the listener: its connections beyond this (per source IP) are closed
    # at accept. A sidecar's app is one IP with a big pool, and a NAT or an L4 balancer in
    # front makes many clients one IP: raise it there (up to max_connections turns it off).
    max_connections_per_client: int = 1000
    hpack_table_size: int = 4096
    # HTTP/2 abuse protection, counted per connection over a sliding one-second window.
    max_resets_per_second: int = 200  # rapid reset (CVE-2023-44487)
    max_control_frames_per_second: int = 500  # PING / SETTINGS floods
    max_empty_frames: int = 100  # DATA frames with no payload and no END_STREAM
    # Frames that do no work, budgeted over the connection's life by the work it does (Envoy's
    # defaults): exceeding one is GOAWAY(ENHANCE_YOUR_CALM).
    max_priority_frames_per_stream: int = 100  # PRIORITY flood, "Resource Loop" (CVE-2019-9513)
    max_window_updates_per_data_frame: int = 10  # WINDOW_UPDATE(+1) flood: CPU for no data
    # Floods of frames read only to be ignored: unknown types (RFC 9113 §5.5), ALTSVC from a
    # client, RST_STREAM for a stream already closed (the rapid-reset rate sees open ones only).
    max_ignored_frames_per_stream: int = 100
    # HTTP/1.1 chunked request bodies: every chunk costs a parse and a trip through the chain,
    # so a body may carry this many chunks beyond one per 64 bytes of its data (a flood of tiny
    # chunks gets 400 and the connection closed). Clients send chunks of KBs and never come
    # near it; 0 turns the check off (a client streaming many tiny messages).
    h1_chunk_budget: int = 1024


class TlsContext(_Frozen, frozen=True):
    cert_file: str
    key_file: str
    ca_file: str | None = None  # trusted CA for the peer's certificate
    require_client_cert: bool = False
    alpn: list[str] = msgspec.field(default_factory=lambda: ["h2", "http/1.1"])


class HeaderMatch(_Frozen, frozen=True):
    name: str
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None
    invert: bool = False


class RouteMatch(_Frozen, frozen=True):
    path: str | None = None
    prefix: str | None = None
    regex: str | None = None
    headers: list[HeaderMatch] = msgspec.field(default_factory=list)
    methods: list[str] = msgspec.field(default_factory=list)


class WeightedCluster(_Frozen, frozen=True):
    name: str
    weight: int


class DirectResponse(_Frozen, frozen=True):
    status: int
    body: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class Route(_Frozen, frozen=True, kw_only=True):
    name: str | None = None
    match: RouteMatch
    cluster: str | None = None
    weighted_clusters: list[WeightedCluster] | None = None
    direct_response: DirectResponse | None = None
    timeout: Duration = Duration(15.0)  # whole upstream response, 0 disables (streaming)
    prefix_rewrite: str | None = None
    host_rewrite: str | None = None


class RouterFilter(_Frozen, frozen=True, tag="router"):
    """The terminal filter that forwards to clusters through the route table."""


class BufferFilter(_Frozen, frozen=True, tag="buffer"):
    """Buffers the whole request body before passing it on; 413 above max_request_bytes."""

    max_request_bytes: int = 1048576


class HeadersFilter(_Frozen, frozen=True, tag="headers"):
    """Adds or removes request and response headers."""

    request_add: dict[str, str] = msgspec.field(default_factory=dict)
    request_remove: list[str] = msgspec.field(default_factory=list)
    response_add: dict[str, str] = msgspec.field(default_factory=dict)
    response_remove: list[str] = msgspec.field(default_factory=list)


class TracingFilter(_Frozen, frozen=True, tag="tracing"):
    """A SERVER span per request and a CLIENT span per upstream attempt, with propagation."""

    sampling_rate: float = 1.0  # parent-based: a sampled/unsampled parent decides, else this ratio
    # Extracted in this order (the first present wins) and all injected toward the upstream.
    propagators: list[Literal["tracecontext", "b3", "b3multi"]] = msgspec.field(
        default_factory=lambda: ["tracecontext", "b3multi"]
    )


RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
]


class RetryBudget(_Frozen, frozen=True):
    """Concurrent retries may be at most max(min_retry_concurrency, budget_percent % of the
    requests in flight through the filter); a retry over it is skipped (rq_retry_overflow)."""

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


class RetryFilter(_Frozen, frozen=True, tag="retry"):
    """Envoy's retry policy as a chain filter: retries upstream failures with jittered back-off."""

    retry_on: list[RetryOn] = msgspec.field(
        default_factory=lambda: ["connect-failure", "refused-stream"]
    )
    retriable_status_codes: list[int] = msgspec.field(default_factory=list)
    num_retries: int = 1
    per_try_timeout: Duration = Duration(0.0)  # 0: none (the route timeout still applies)
    base_interval: Duration = Duration(0.025)
    max_interval: Duration | None = None  # None: 10 x base_interval
    retry_budget: RetryBudget | None = None  # None: no limit on concurrent retries
    include_attempt_count: bool = False  # x-envoy-attempt-count on each upstream attempt
    respect_request_headers: bool = False  # honour (and consume) x-envoy-max-retries
    stat_prefix: str = "retry"  # counters: http.<stat_prefix>.retry.upstream_rq_retry*


FilterConfig = (
    RouterFilter
    | BufferFilter
    | HeadersFilter
    | TracingFilter
    | RetryFilter
    | DaprApiFilter
    | DaprGrpcFilter
    | DaprInternalFilter
)


class AccessLog(_Frozen, frozen=True):
    """One JSON line per request; path "-" is standard output."""

    path: str = "-"


class Listener(_Frozen, frozen=True):
    name: str
    address: str  # "host:port" or "[v6]:port"
    protocols: list[Literal["http1", "h2c"]] = msgspec.field(
        default_factory=lambda: ["http1", "h2c"]
    )
    tls: TlsContext | None = None
    # Mutual TLS with the sidecar's workload certificate (needs `sidecar`): for other sidecars.
    sidecar_mtls: bool = False
    filters: list[FilterConfig] = msgspec.field(default_factory=lambda: [RouterFilter()])
    routes: list[Route] = msgspec.field(default_factory=list)
    limits: Limits = msgspec.field(default_factory=Limits)
    generate_request_id: bool = True
    # As Envoy's HCM. true (an edge): append the peer to x-forwarded-for and set
    # x-forwarded-proto from the downstream connection (http/https), replacing the client's unless
    # xff_num_trusted_hops > 0; the trusted client address is the peer, or with N trusted hops the
    # Nth address from the right of x-forwarded-for. false (behind a trusted proxy, or a sidecar):
    # both headers pass unchanged; the trusted client address is the (N+1)th from the right.
    # Too short a list, or no IP there: the peer. It is logged as client_address.
    use_remote_address: bool = True
    xff_num_trusted_hops: int = 0  # proxies in front of this listener whose x-forwarded-* count
    stat_prefix: str | None = None
    access_log: AccessLog | None = None


# --- clusters --------------------------------------------------------------------------------


class UpstreamTls(_Frozen, frozen=True):
    ca_file: str | None = None  # None: the system trust store
    cert_file: str | None = None  # client certificate for mutual TLS
    key_file: str | None = None
    sni: str | None = None
    verify: bool = True


class Cluster(_Frozen, frozen=True):
    name: str
    endpoints: list[str]  # "host:port"
    protocol: Literal["http1", "h2c", "h2"] = "http1"  # h2 means HTTP/2 over TLS (ALPN)
    tls: UpstreamTls | None = None
    lb_policy: Literal["round_robin", "least_request"] = "round_robin"
    connect_timeout: Duration = Duration(5.0)
    idle_timeout: Duration = Duration(60.0)  # keep below the upstream's own keep-alive
    max_connections: int = 1024
    max_requests: int = 1024  # concurrent requests (circuit breaker) → 503 UO above it
    max_concurrent_streams: int = 100  # per HTTP/2 connection


class ZipkinExporter(_Frozen, frozen=True):
    endpoint: str = "http://127.0.0.1:9411/api/v2/spans"
    timeout: Duration = Duration(10.0)


class OtlpExporter(_Frozen, frozen=True):
    """Traces and metrics over OTLP (to an OpenTelemetry Collector, and so Application Insights)."""

    endpoint: str  # grpc: host:port or http(s)://host:port; http/protobuf: base URL (+/v1/traces)
    protocol: Literal["grpc", "http/protobuf"] = "http/protobuf"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    insecure: bool = True  # grpc without TLS
    timeout: Duration = Duration(10.0)


class Telemetry(_Frozen, frozen=True):
    service_name: str = "meshwire"
    resource: dict[str, str] = msgspec.field(default_factory=dict)  # extra resource attributes
    zipkin: ZipkinExporter | None = None
    otlp: OtlpExporter | None = None
    console: bool = False  # spans to stdout, for trying things out
    max_queue_size: int = 2048  # spans waiting for export; beyond it they are dropped and counted
    metric_export_interval: Duration = Duration(15.0)  # OTLP metrics push period


class Admin(_Frozen, frozen=True):
    address: str = "127.0.0.1:9901"


class Config(_Frozen, frozen=True):
    # Worker processes serving the listeners (SO_REUSEPORT spreads connections over them);
    # 1 is one process and no supervisor, 0 or "auto" one per CPU this process may run on.
    concurrency: int | Literal["auto"] = 1
    admin: Admin | None = msgspec.field(default_factory=Admin)
    listeners: list[Listener] = msgspec.field(default_factory=list)
    clusters: list[Cluster] = msgspec.field(default_factory=list)
    drain_timeout: Duration = Duration(30.0)
    telemetry: Telemetry = msgspec.field(default_factory=Telemetry)
    sidecar: Sidecar | None = None  # Dapr mode: this process is the sidecar of one app
    # The HTTP/1.1 parser of every listener and upstream pool: httptools (llhttp) when it is
    # installed (auto), or h11, the pure-Python reference. Both refuse the same framing tricks.
    codec: Literal["auto", "h11", "httptools"] = "auto"


def _encode_custom(value: object) -> object:
    if isinstance(value, Duration):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def to_builtins(config: msgspec.Struct) -> object:
    """Plain data (dicts, lists, numbers) that the loader reads back to an equal config."""
    return msgspec.to_builtins(config, enc_hook=_encode_custom)
