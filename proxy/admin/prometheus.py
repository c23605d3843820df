"""Render the stats store as Prometheus text exposition format 0.0.4."""

from __future__ import annotations

from proxy.stats import Stats

# Dotted Envoy-style names carry one tag in their second segment; Prometheus wants it as a label.
_TAGGED = {"cluster": "cluster_name", "http": "listener"}


def _split(name: str) -> tuple[str, dict[str, str]]:
    head, _, rest = name.partition(".")
    label = _TAGGED.get(head)
    if label and rest.count(".") >= 1:
        tag, _, stat = rest.partition(".")
        return f"meshwire_{head}_{stat}".replace(".", "_"), {label: tag}
    return "meshwire_" + name.replace(".", "_"), {}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(stats: Stats) -> str:
    families: dict[str, tuple[str, list[str]]] = {}
    for kind, items in (("counter", stats.counters()), ("gauge", stats.gauges())):
        for item in items:
            metric, labels = _split(item.name)
            if kind == "counter" and not metric.endswith("_total"):
                metric += "_total"  # promtool: counters end in _total
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            sample = (
                f"{metric}{{{label_text}}} {item.value}" if label_text else f"{metric} {item.value}"
            )
            families.setdefault(metric, (kind, []))[1].append(sample)
    lines: list[str] = []
    for metric in sorted(families):
        kind, samples = families[metric]
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"
