"""The TracerProvider built from config: one bounded batch processor per configured exporter."""

from __future__ import annotations

import sys

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from config import schema
from exporters.resource import otlp_exporter_kwargs
from exporters.span_queue import BoundedSpanProcessor, SpanAccounts


def otlp_span_exporter(otlp: schema.OtlpExporter) -> SpanExporter:
    """OTLP traces over gRPC or http/protobuf (each imported only when configured)."""
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(**otlp_exporter_kwargs(otlp, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(**otlp_exporter_kwargs(otlp, "traces"))


def span_exporters(config: schema.Telemetry) -> list[SpanExporter]:
    """The exporters the config asks for, in a fixed order: zipkin, otlp, console."""
    found: list[SpanExporter] = []
    if config.zipkin is not None:
        from exporters.zipkin import zipkin_exporter

        found.append(zipkin_exporter(config.zipkin))
    if config.otlp is not None:
        found.append(otlp_span_exporter(config.otlp))
    if config.console:
        found.append(ConsoleSpanExporter(service_name=config.service_name, out=sys.stdout))
    return found


def build_tracer_provider(
    config: schema.Telemetry,
    resource: Resource,
    accounts: SpanAccounts,
    meter_provider: MeterProvider,
) -> TracerProvider:
    """Without exporters, the API's no-op provider: spans cost a context lookup and nothing
    else, and a tracing filter passes the incoming trace context through unchanged (the SDK
    with no processor would still build, time and attribute every span only to drop it, and
    an always-off sampler would clear the sampled flag that downstream services rely on).
    """
    exporters = span_exporters(config)
    if not exporters:
        return NoOpTracerProvider()
    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(
            BoundedSpanProcessor(
                exporter,
                capacity=config.max_queue_size,
                accounts=accounts,
                meter_provider=meter_provider,
            )
        )
    return provider
