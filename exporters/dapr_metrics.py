"""Dapr's own metric names, so Dapr's Grafana dashboards keep working after a swap to meshwire.

Dapr exports OpenCensus views: counters without a `_total` suffix (except the few whose view name
ends in `_total`), latencies as millisecond histograms with its own buckets. The OTel Prometheus
exporter would rename them, so these are kept and rendered here, in Prometheus text 0.0.4.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable

from exporters.prometheus_text import escape_label_value

# Dapr's default latency buckets, in milliseconds (pkg/diagnostics/utils).
LATENCY_BUCKETS_MS = (
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300,
    400, 500, 650, 800, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
# Bytes per request/response (OpenCensus' DefaultSizeDistribution, which Dapr uses).
SIZE_BUCKETS = (
    1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456,
    1073741824, 4294967296,
)  # fmt: skip

_HTTP_LABELS = ("app_id", "method", "path", "status")
# State management (S3): Dapr's component metrics for state stores.
_STATE_LABELS = ("app_id", "component", "namespace", "operation", "success")
_EGRESS_LABELS = ("app_id", "component", "namespace", "success", "topic")
_INGRESS_LABELS = ("app_id", "component", "namespace", "process_status", "topic")


_Cell = list[float]  # a counter series: [total]
_Buckets = tuple[list[int], list[float]]  # a histogram series: (bucket counts, [sum])
# One request's series in each HTTP family (server: requests, responses, latency, request and
# response bytes; client: completed, latency, sent and received bytes).
_ServerRow = tuple[_Cell, _Cell, _Buckets, _Buckets, _Buckets]
_ClientRow = tuple[_Cell, _Buckets, _Buckets, _Buckets]


class _Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.labels = name, help_text, labels
        self.series: dict[tuple[str, ...], _Cell] = {}

    def cell(self, values: tuple[str, ...]) -> _Cell:
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = [0.0]
        return found

    def add(self, values: tuple[str, ...], amount: float = 1.0) -> None:
        self.cell(values)[0] += amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for values, (total,) in sorted(self.series.items()):
            yield f"{self.name}{_labels(self.labels, values)} {_number(total)}"


class _Histogram:
    def __init__(
        self, name: str, help_text: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self.name, self.help, self.labels, self.bounds = name, help_text, labels, bounds
        self.series: dict[tuple[str, ...], _Buckets] = {}

    def cell(self, values: tuple[str, ...]) -> _Buckets:
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = ([0] * (len(self.bounds) + 1), [0.0])
        return found

    def put(self, cell: _Buckets, value: float) -> None:
        cell[0][bisect.bisect_left(self.bounds, value)] += 1
        cell[1][0] += value

    def observe(self, values: tuple[str, ...], value: float) -> None:
        self.put(self.cell(values), value)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for values, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                extra = (("le", le),)
                yield f"{self.name}_bucket{_labels(self.labels, values, extra)} {running}"
            yield f"{self.name}_sum{_labels(self.labels, values)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(self.labels, values)} {running}"


class DaprMetrics:
    """The HTTP server (app → sidecar), HTTP client (sidecar → app) and service-invocation
    families Dapr's sidecar dashboard queries. Recorded on the trio thread; rendered from the
    admin port, so one lock keeps a scrape consistent.

    A request's HTTP series are found once per (method, path, status) and kept together in a
    row, so recording one is a single dict look-up, not one per family.
    """

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self._lock = threading.Lock()
        self._server_rows: dict[tuple[str, str, int], _ServerRow] = {}
        self._client_rows: dict[tuple[str, str, int], _ClientRow] = {}
        h = _HTTP_LABELS
        self.server_requests = _Counter(
            "dapr_http_server_request_count", "HTTP requests started by the app.", h[:3]
        )
        self.server_responses = _Counter(
            "dapr_http_server_response_count", "HTTP responses sent to the app.", h
        )
        self.server_latency = _Histogram(
            "dapr_http_server_latency", "HTTP server latency in ms.", h, LATENCY_BUCKETS_MS
        )
        self.server_request_bytes = _Histogram(
            "dapr_http_server_request_bytes", "HTTP request body sizes.", h[:3], SIZE_BUCKETS
        )
        self.server_response_bytes = _Histogram(
            "dapr_http_server_response_bytes", "HTTP response body sizes.", h, SIZE_BUCKETS
        )
        self.client_completed = _Counter(
            "dapr_http_client_completed_count", "HTTP calls to the app completed.", h
        )
        self.client_latency = _Histogram(
            "dapr_http_client_roundtrip_latency",
            "HTTP call latency to the app in ms.",
            h,
            LATENCY_BUCKETS_MS,
        )
        self.client_sent_bytes = _Histogram(
            "dapr_http_client_sent_bytes", "HTTP request body sizes sent to the app.", h[:3],
            SIZE_BUCKETS,
        )  # fmt: skip
        self.client_received_bytes = _Histogram(
            "dapr_http_client_received_bytes", "HTTP response body sizes from the app.", h,
            SIZE_BUCKETS,
        )  # fmt: skip
        self.invoke_sent = _Counter(
            "dapr_runtime_service_invocation_req_sent_total",
            "Invocations sent to another app.",
            ("app_id", "dst_app_id", "type"),
        )
        self.invoke_received = _Counter(
            "dapr_runtime_service_invocation_req_recv_total",
            "Invocations received from another app.",
            ("app_id", "src_app_id", "type"),
        )
        self.invoke_responses = _Counter(
            "dapr_runtime_service_invocation_res_recv_total",
            "Invocation responses received from another app.",
            ("app_id", "dst_app_id", "type", "status"),
        )
        self.invoke_latency = _Histogram(
            "dapr_runtime_service_invocation_res_recv_latency_ms",
            "Invocation round trip to another app in ms.",
            ("app_id", "dst_app_id", "type", "status"),
            LATENCY_BUCKETS_MS,
        )
        # State management (S3): one series per store, operation and outcome.
        self.state_count = _Counter(
            "dapr_component_state_count", "Operations performed on a state component.",
            _STATE_LABELS,
        )  # fmt: skip
        self.state_latency = _Histogram(
            "dapr_component_state_latencies",
            "State component operation latency in ms.",
            _STATE_LABELS,
            LATENCY_BUCKETS_MS,
        )
        # Pub/sub (S4): publishes by outcome, deliveries by what the app answered.
        self.egress_count = _Counter(
            "dapr_component_pubsub_egress_count", "Messages published to a pub/sub component.",
            _EGRESS_LABELS,
        )  # fmt: skip
        self.egress_latency = _Histogram(
            "dapr_component_pubsub_egress_latencies",
            "Publish latency to a pub/sub component in ms.",
            _EGRESS_LABELS,
            LATENCY_BUCKETS_MS,
        )
        self.ingress_count = _Counter(
            "dapr_component_pubsub_ingress_count", "Messages delivered from a pub/sub component.",
            _INGRESS_LABELS,
        )  # fmt: skip
        self.ingress_latency = _Histogram(
            "dapr_component_pubsub_ingress_latencies",
            "Delivery latency of pub/sub messages to the app in ms.",
            _INGRESS_LABELS,
            LATENCY_BUCKETS_MS,
        )
        self._families: tuple[_Counter | _Histogram, ...] = (
            self.server_requests,
            self.server_responses,
            self.server_latency,
            self.server_request_bytes,
            self.server_response_bytes,
            self.client_completed,
            self.client_latency,
            self.client_sent_bytes,
            self.client_received_bytes,
            self.invoke_sent,
            self.invoke_received,
            self.invoke_responses,
            self.invoke_latency,
            self.state_count,  # S3
            self.state_latency,  # S3
            self.egress_count,  # S4
            self.egress_latency,  # S4
            self.ingress_count,  # S4
            self.ingress_latency,  # S4
        )

    def server(self, method: str, path: str, status: int, ms: float, rx: int, tx: int) -> None:
        """One app → sidecar HTTP request, when its response has ended."""
        key = (method, path, status)
        with self._lock:
            row = self._server_rows.get(key)
            if row is None:
                row = self._server_rows[key] = self._server_row(method, path, status)
            requests, responses, latency, request_bytes, response_bytes = row
            requests[0] += 1
            responses[0] += 1
            self.server_latency.put(latency, ms)
            self.server_request_bytes.put(request_bytes, rx)
            self.server_response_bytes.put(response_bytes, tx)

    def _server_row(self, method: str, path: str, status: int) -> _ServerRow:
        values = (self.app_id, method, path)
        full = (*values, str(status))
        return (
            self.server_requests.cell(values),
            self.server_responses.cell(full),
            self.server_latency.cell(full),
            self.server_request_bytes.cell(values),
            self.server_response_bytes.cell(full),
        )

    def client(self, method: str, path: str, status: int, ms: float, tx: int, rx: int) -> None:
        """One sidecar → app HTTP call, when the app's response has ended."""
        key = (method, path, status)
        with self._lock:
            row = self._client_rows.get(key)
            if row is None:
                row = self._client_rows[key] = self._client_row(method, path, status)
            completed, latency, sent_bytes, received_bytes = row
            completed[0] += 1
            self.client_latency.put(latency, ms)
            self.client_sent_bytes.put(sent_bytes, tx)
            self.client_received_bytes.put(received_bytes, rx)

    def _client_row(self, method: str, path: str, status: int) -> _ClientRow:
        values = (self.app_id, method, path)
        full = (*values, str(status))
        return (
            self.client_completed.cell(full),
            self.client_latency.cell(full),
            self.client_sent_bytes.cell(values),
            self.client_received_bytes.cell(full),
        )

    def invocation_sent(self, target: str, status: int, ms: float) -> None:
        with self._lock:
            self.invoke_sent.add((self.app_id, target, "unary"))
            full = (self.app_id, target, "unary", str(status))
            self.invoke_responses.add(full)
            self.invoke_latency.observe(full, ms)

    def invocation_received(self, caller: str) -> None:
        with self._lock:
            self.invoke_received.add((self.app_id, caller, "unary"))

    def state(
        self, component: str, namespace: str, operation: str, success: bool, ms: float
    ) -> None:
        """One state store operation (S3), when it has ended."""
        values = (self.app_id, component, namespace, operation, "true" if success else "false")
        with self._lock:
            self.state_count.add(values)
            self.state_latency.observe(values, ms)

    def published(
        self, component: str, namespace: str, topic: str, success: bool, ms: float
    ) -> None:
        """One publish to a broker (S4), when the broker answered."""
        outcome = "true" if success else "false"
        values = (self.app_id, component, namespace, outcome, topic)
        with self._lock:
            self.egress_count.add(values)
            self.egress_latency.observe(values, ms)

    def delivered(
        self, component: str, namespace: str, topic: str, process_status: str, ms: float
    ) -> None:
        """One delivery to the app (S4): process_status is success, retry or drop."""
        values = (self.app_id, component, namespace, process_status, topic)
        with self._lock:
            self.ingress_count.add(values)
            self.ingress_latency.observe(values, ms)

    def render(self) -> str:
        with self._lock:
            lines = [line for family in self._families if family.series for line in family.render()]
        return "\n".join(lines) + "\n" if lines else ""


def _labels(
    names: tuple[str, ...], values: tuple[str, ...], extra: tuple[tuple[str, str], ...] = ()
) -> str:
    pairs = [*zip(names, values, strict=True), *extra]
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
