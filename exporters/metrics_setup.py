"""The MeterProvider built from config: Prometheus (private registry) always, OTLP push if set."""

from __future__ import annotations

import math

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from config import schema
from exporters import names
from exporters.resource import otlp_exporter_kwargs


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
    config: schema.Telemetry, resource: Resource
) -> tuple[MeterProvider, CollectorRegistry]:
    """A provider and the private registry its Prometheus reader fills (never the global one).

    A metric_export_interval of 0 pushes OTLP metrics only on flush and shutdown.
    """
    registry = CollectorRegistry(auto_describe=False)
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    if config.otlp is not None:
        interval = float(config.metric_export_interval) * 1000.0
        readers.append(
            PeriodicExportingMetricReader(
                otlp_metric_exporter(config.otlp),
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
