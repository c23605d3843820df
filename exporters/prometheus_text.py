"""OpenTelemetry metrics as Prometheus text, from a private registry, ready to merge with others."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric


def escape_label_value(value: str) -> str:
    """A label value as the 0.0.4 text format writes it (backslash, newline, double quote)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposed_names(family: Metric) -> set[str]:
    """Every name a family puts in a 0.0.4 exposition: its TYPE line's and its samples'."""
    typed = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
    return {typed} | {sample.name for sample in family.samples}


class _Filtered:
    """A collector view of a registry: skips families that clash with `exclude` and fills in
    empty help texts (promtool rejects a family without one)."""

    def __init__(self, registry: CollectorRegistry, exclude: Collection[str]) -> None:
        self._registry = registry
        self._exclude = exclude

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            if self._exclude and not exposed_names(family).isdisjoint(self._exclude):
                continue
            if not family.documentation.strip():
                family.documentation = f"OpenTelemetry metric {family.name}"
            yield family


def render_registry(registry: CollectorRegistry, exclude: Collection[str] = ()) -> str:
    """The registry's families (collected now) minus those using any name in `exclude`."""
    return generate_latest(_Filtered(registry, exclude)).decode()
