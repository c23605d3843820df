"""Render the stats store, plus the OpenTelemetry metrics, as Prometheus text format 0.0.4."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporters.prometheus_text import escape_label_value
from proxy.stats import Stats

if TYPE_CHECKING:
    from exporters.telemetry import Telemetry

# Dotted Envoy-style names carry one tag in their second segment; Prometheus wants it as a label.
_TAGGED = {"cluster": "cluster_name", "http": "listener"}

# Help text by the stat's last segment (promtool rejects a family without one).
_HELP = {
    "downstream_cx_total": "Downstream connections accepted.",
    "downstream_cx_active": "Downstream connections open now.",
    "downstream_cx_destroy_remote": "Downstream connections closed by the client.",
    "downstream_cx_protocol_error": "Downstream connections closed on a protocol error.",
    "downstream_cx_overflow": "Downstream connections refused over max_connections.",
    "downstream_cx_client_overflow": "Downstream connections refused over "
    "max_connections_per_client.",
    "downstream_cx_idle_evicted": "Idle downstream connections closed to admit new ones.",
    "downstream_cx_first_byte_timeout": "Downstream connections that sent nothing in time.",
    "downstream_rq_total": "Downstream requests received.",
    "downstream_rq_active": "Downstream requests in flight.",
    "downstream_rq_timeout": "Downstream requests that timed out.",
    "downstream_rq_rx_reset": "Downstream requests reset by the client.",
    "downstream_rq_too_large": "Downstream requests refused as too large (413).",
    "upstream_cx_total": "Upstream connections opened.",
    "upstream_cx_active": "Upstream connections open now.",
    "upstream_cx_connect_fail": "Upstream connection attempts that failed.",
    "upstream_cx_connect_timeout": "Upstream connection attempts that timed out.",
    "upstream_rq_total": "Upstream requests sent.",
    "upstream_rq_active": "Upstream requests in flight.",
    "upstream_rq_pending_overflow": "Upstream requests refused by the circuit breaker (503 UO).",
    "upstream_rq_rx_reset": "Upstream requests reset by the upstream.",
    "upstream_rq_timeout": "Upstream requests that timed out (route timeout, 504 UT).",
    "upstream_rq_retry": "Upstream requests sent again (a stale connection or a refused stream).",
    "spans_dropped": "Spans dropped because an exporter's queue was full.",
    "spans_exported": "Spans an exporter delivered (summed over exporters).",
    "spans_export_failed": "Spans in export batches that failed (summed over exporters).",
}


def _split(name: str) -> tuple[str, dict[str, str]]:
    head, _, rest = name.partition(".")
    label = _TAGGED.get(head)
    if label and rest.count(".") >= 1:
        tag, _, stat = rest.partition(".")
        return f"meshwire_{head}_{stat}".replace(".", "_"), {label: tag}
    return "meshwire_" + name.replace(".", "_"), {}


def _help(name: str) -> str:
    stat = name.rpartition(".")[2]
    found = _HELP.get(stat)
    if found is not None:
        return found
    if stat[-3:] in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        side = "Upstream" if stat.startswith("upstream") else "Downstream"
        return f"{side} responses with status {stat[-3:]}."
    return f"meshwire stat {name}."


def render_stats(stats: Stats) -> tuple[str, set[str]]:
    """The stats store's families, and every metric name they use."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for kind, items in (("counter", stats.counters()), ("gauge", stats.gauges())):
        for item in items:
            metric, labels = _split(item.name)
            if kind == "counter" and not metric.endswith("_total"):
                metric += "_total"  # promtool: counters end in _total
            label_text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
            sample = (
                f"{metric}{{{label_text}}} {item.value}" if label_text else f"{metric} {item.value}"
            )
            families.setdefault(metric, (kind, _help(item.name), []))[2].append(sample)
    lines: list[str] = []
    for metric in sorted(families):
        kind, help_text, samples = families[metric]
        lines.append(f"# HELP {metric} {_escape_help(help_text)}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(samples)
    return "".join(line + "\n" for line in lines), set(families)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render(stats: Stats, telemetry: Telemetry | None = None) -> str:
    """One exposition: the stats families, then the OTel ones whose names do not clash."""
    text, used = render_stats(stats)
    if telemetry is not None:
        text += telemetry.prometheus_text(exclude=used)
    return text
