"""Which exporters a config makes, and where OTLP/HTTP sends each signal."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.trace import NoOpTracerProvider

from config import schema
from exporters.resource import build_resource, signal_url
from exporters.telemetry import Telemetry
from exporters.tracing_setup import span_exporters
from exporters.zipkin_session import zipkin_session
from proxy.stats import Stats


def test_signal_url_appends_or_rebases_the_signal_path() -> None:
    assert signal_url("http://c:4318", "traces") == "http://c:4318/v1/traces"
    assert signal_url("http://c:4318/", "metrics") == "http://c:4318/v1/metrics"
    assert signal_url("http://c:4318/v1/traces", "metrics") == "http://c:4318/v1/metrics"


def test_exporters_in_order_and_none_means_no_sdk_tracer() -> None:
    config = schema.Telemetry(
        zipkin=schema.ZipkinExporter(),
        otlp=schema.OtlpExporter(endpoint="http://127.0.0.1:4318"),
        console=True,
    )
    otlp, console = span_exporters(config)  # Zipkin has its own processor, not an SDK batch
    assert type(otlp).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    assert isinstance(console, ConsoleSpanExporter)
    for exporter in (otlp, console):
        exporter.shutdown()
    session = zipkin_session(schema.ZipkinExporter().endpoint)  # the Zipkin worker's
    assert session.headers["Content-Type"] == "application/json"
    assert not session.trust_env  # proxies read once, not on every POST
    session.close()
    assert span_exporters(schema.Telemetry()) == []
    stats = Stats()
    assert isinstance(
        Telemetry.build(schema.Telemetry(), stats).tracer_provider, NoOpTracerProvider
    )
    assert stats.counter("telemetry.spans_dropped").value == 0  # exposed even when unused


def test_service_name_always_comes_from_service_name() -> None:
    resource = build_resource(
        schema.Telemetry(service_name="a", resource={"service.name": "b", "team": "t"})
    )
    assert resource.attributes["service.name"] == "a"
    assert resource.attributes["team"] == "t"
    assert "service.version" in resource.attributes
