"""The TracerProvider built from config: one bounded batch processor per configured exporter."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from config import schema
from exporters import names
from exporters.resource import otlp_exporter_kwargs
from exporters.span_queue import BoundedSpanProcessor, SpanAccounts
from exporters.spans import SpanRecorder
from proxy.version import VERSION


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
    """The SDK-batched exporters the config asks for, in a fixed order: otlp, console
    (Zipkin has its own processor, see span_processors)."""
    found: list[SpanExporter] = []
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
) -> tuple[TracerProvider, SpanRecorder | None]:
    """Without exporters, the API's no-op provider and no recorder: a tracing filter then passes
    the incoming trace context through unchanged (recording spans only to drop them would cost
    time, and an always-off sampler would clear the sampled flag downstream services rely on).
    """
    processors: list[SpanProcessor] = []
    if config.zipkin is not None:
        from exporters.zipkin_processor import ZipkinSpanProcessor

        processors.append(
            ZipkinSpanProcessor(config.zipkin, capacity=config.max_queue_size, accounts=accounts)
        )
    processors.extend(
        BoundedSpanProcessor(
            exporter,
            capacity=config.max_queue_size,
            accounts=accounts,
            meter_provider=meter_provider,
        )
        for exporter in span_exporters(config)
    )
    if not processors:
        return NoOpTracerProvider(), None
    return sdk_tracing(resource, processors)


def sdk_tracing(
    resource: Resource, processors: Iterable[SpanProcessor]
) -> tuple[SdkTracerProvider, SpanRecorder]:
    """An SDK TracerProvider and the data plane's recorder, feeding the same processors."""
    active = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    provider = SdkTracerProvider(
        resource=resource, shutdown_on_exit=False, active_span_processor=active
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider, SpanRecorder(active, resource, InstrumentationScope(names.SCOPE, VERSION))
