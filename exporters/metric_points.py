"""The cheap instruments as OpenTelemetry metric points, merged into what SDK readers collect."""

from __future__ import annotations

import time
from dataclasses import replace

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporters.instruments import (
    Counter,
    CounterSeries,
    HistogramSeries,
    Instruments,
)
from exporters.instruments import Histogram as CheapHistogram

DELTA = AggregationTemporality.DELTA


class PointReader:
    """Reads the instruments for one metric reader, as the SDK would have aggregated them.

    Cumulative points are the series as recorded, starting when each series was first
    recorded. Delta points are the difference from what this reader read last time; a series
    with nothing new is left out (as the SDK does), and delta histogram points carry no min/max
    (the series keep them cumulative only; both are optional in OTLP).

    Collection may run on an exporter thread while the trio thread records: a series is read
    without a lock, so its sum may hold one observation its buckets do not yet (or the other
    way round) until the next collection; the count is always the buckets' total.
    """

    def __init__(
        self,
        instruments: Instruments,
        scope: InstrumentationScope,
        histograms: AggregationTemporality = AggregationTemporality.CUMULATIVE,
        counters: AggregationTemporality = AggregationTemporality.CUMULATIVE,
    ) -> None:
        self._instruments = instruments
        self._scope = scope
        self._histograms = histograms
        self._counters = counters
        # delta only: per series, what was read last time and when
        self._last_histogram: dict[HistogramSeries, tuple[list[int], float, int]] = {}
        self._last_counter: dict[CounterSeries, tuple[int, int]] = {}

    def metrics(self, now_ns: int | None = None) -> list[Metric]:
        """One Metric per instrument with data, in the instruments' order."""
        now = time.time_ns() if now_ns is None else now_ns
        found: list[Metric] = []
        for instrument in self._instruments.all():
            data: Histogram | Sum | None
            if isinstance(instrument, CheapHistogram):
                data = self._histogram(instrument, now)
            else:
                data = self._counter(instrument, now)
            if data is not None:
                found.append(Metric(instrument.name, instrument.description, instrument.unit, data))
        return found

    def merge(self, data: MetricsData) -> MetricsData:
        """`data` with these metrics ahead of the SDK's own in meshwire's scope."""
        ours = self.metrics()
        if not ours or not data.resource_metrics:
            return data
        first, *rest = data.resource_metrics
        scopes = list(first.scope_metrics)
        for i, scope_metrics in enumerate(scopes):
            if scope_metrics.scope == self._scope:
                scopes[i] = replace(scope_metrics, metrics=[*ours, *scope_metrics.metrics])
                break
        else:
            scopes.insert(0, ScopeMetrics(self._scope, ours, self._scope.schema_url or ""))
        return MetricsData([replace(first, scope_metrics=scopes), *rest])

    def _histogram(self, instrument: CheapHistogram, now: int) -> Histogram | None:
        bounds = instrument.bounds
        delta = self._histograms is DELTA
        points: list[HistogramDataPoint] = []
        for series in instrument.snapshot():
            counts = series.counts[:]  # one C-level copy: never torn by a concurrent record
            total, low, high, start = series.total, series.min, series.max, series.start_ns
            if delta:
                last = self._last_histogram.get(series)
                self._last_histogram[series] = (counts, total, now)
                if last is not None:
                    counts = [c - p for c, p in zip(counts, last[0], strict=True)]
                    total, start = total - last[1], last[2]
                low = high = None  # type: ignore[assignment]  # unknown per interval: omitted
            count = sum(counts)
            if count == 0:
                continue
            points.append(
                HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=count,
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=bounds,
                    min=low,
                    max=high,
                )
            )
        if not points:
            return None
        return Histogram(data_points=points, aggregation_temporality=self._histograms)

    def _counter(self, instrument: Counter, now: int) -> Sum | None:
        delta = self._counters is DELTA
        points: list[NumberDataPoint] = []
        for series in instrument.snapshot():
            value, start = series.value, series.start_ns
            if delta:
                last = self._last_counter.get(series)
                self._last_counter[series] = (value, now)
                if last is not None:
                    value, start = value - last[0], last[1]
                if value == 0:
                    continue
            points.append(NumberDataPoint(series.attributes, start, now, value))
        if not points:
            return None
        return Sum(points, self._counters, is_monotonic=True)
