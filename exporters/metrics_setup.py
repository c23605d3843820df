"""The MeterProvider built from config: Prometheus (private registry) always, OTLP push if set."""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from config import schema
from exporters import names
from exporters.instruments import Instruments
from exporters.metric_points import PointReader
from exporters.resource import otlp_exporter_kwargs
from proxy.version import VERSION

# The scope the SDK gives meshwire's own meter (Telemetry.meter), so the cheap instruments are
# exported beside its observable instruments, exactly as when they were SDK instruments.
SCOPE = InstrumentationScope(names.SCOPE, VERSION)


class PrometheusReader(PrometheusMetricReader):
    """The SDK's Prometheus reader, with the cheap instruments added to every collection: they
    go through the same translation as the SDK's metrics (names, units, labels, target_info).

    Like every SDK reader it hears nothing when the SDK itself has no data point, which never
    happens under Telemetry.build: its observable spans_dropped counter always reports one.
    """

    def __init__(self, registry: CollectorRegistry, instruments: Instruments) -> None:
        super().__init__(registry=registry)
        self._points = PointReader(instruments, SCOPE)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(self._points.merge(metrics_data), timeout_millis, **kwargs)


class PeriodicReader(PeriodicExportingMetricReader):
    """The SDK's periodic push, with the cheap instruments added to every collection, in the
    temporality the exporter prefers (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE)."""

    def __init__(
        self,
        exporter: MetricExporter,
        instruments: Instruments,
        export_interval_millis: float,
        export_timeout_millis: float,
    ) -> None:
        super().__init__(
            exporter,
            export_interval_millis=export_interval_millis,
            export_timeout_millis=export_timeout_millis,
        )
        # Without a ticker thread (interval 0) the SDK's shutdown pushes nothing: done here.
        self._last_push_on_shutdown = math.isinf(export_interval_millis)
        preferred = exporter._preferred_temporality or {}
        cumulative = AggregationTemporality.CUMULATIVE
        self._points = PointReader(
            instruments,
            SCOPE,
            histograms=preferred.get(Histogram, cumulative),
            counters=preferred.get(Counter, cumulative),
        )

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(self._points.merge(metrics_data), timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._last_push_on_shutdown:
            self._last_push_on_shutdown = False
            self.collect(timeout_millis)
        super().shutdown(timeout_millis, **kwargs)


def otlp_metric_exporter(otlp: schema.OtlpExporter) -> MetricExporter:
    """OTLP metrics over gRPC or http/protobuf (each imported only when configured)."""
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(**otlp_exporter_kwargs(otlp, "metrics"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(**otlp_exporter_kwargs(otlp, "metrics"))


def seconds_histograms() -> View:
    """Every histogram in seconds gets the semconv buckets, advisory or not (the SDK's default
    buckets, 0..10000, are meant for milliseconds)."""
    return View(
        instrument_type=Histogram,
        instrument_unit="s",
        aggregation=ExplicitBucketHistogramAggregation(list(names.DURATION_BUCKETS)),
    )


def build_meter_provider(
    config: schema.Telemetry, resource: Resource, instruments: Instruments
) -> tuple[MeterProvider, CollectorRegistry]:
    """A provider and the private registry its Prometheus reader fills (never the global one);
    both readers also export `instruments`.

    A metric_export_interval of 0 pushes OTLP metrics only on flush and shutdown.
    """
    registry = CollectorRegistry(auto_describe=False)
    readers: list[MetricReader] = [PrometheusReader(registry, instruments)]
    if config.otlp is not None:
        interval = float(config.metric_export_interval) * 1000.0
        readers.append(
            PeriodicReader(
                otlp_metric_exporter(config.otlp),
                instruments,
                export_interval_millis=interval if interval > 0 else math.inf,
                export_timeout_millis=float(config.otlp.timeout) * 1000.0,
            )
        )
    provider = MeterProvider(
        metric_readers=readers,
        resource=resource,
        views=[seconds_histograms()],
        shutdown_on_exit=False,
    )
    return provider, registry
