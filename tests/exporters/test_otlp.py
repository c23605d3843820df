"""OTLP over http/protobuf and gRPC: spans and the duration histogram reach real receivers."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.trace import SpanKind

from config import schema
from exporters import names
from exporters.telemetry import Telemetry
from proxy.stats import Stats
from proxy.version import VERSION
from tests.exporters.receivers import Received, grpc_receiver, http_receiver, wait_until

ATTRS = {"http.request.method": "GET", "http.response.status_code": 200, "http.route": "/r"}
CLIENT = {"http.request.method": "GET", "server.address": "10.0.0.1", "server.port": 8080}


CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


def otlp_config(endpoint: str, protocol: str, interval: float = 15.0) -> schema.Telemetry:
    return schema.Telemetry(
        service_name="otlp-proxy",
        resource={"deployment.environment.name": "test"},
        otlp=schema.OtlpExporter(endpoint=endpoint, protocol=protocol),  # type: ignore[arg-type]
        metric_export_interval=schema.Duration(interval),
    )


def resource_of(received: Received) -> dict[str, str]:
    [request, *_] = received.traces
    return {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}


def record(telemetry: Telemetry) -> None:
    with telemetry.tracer.start_as_current_span("GET /r", kind=SpanKind.SERVER, attributes=ATTRS):
        with telemetry.tracer.start_as_current_span("GET", kind=SpanKind.CLIENT):
            pass
    duration = telemetry.instruments.server_duration
    duration.record(duration.key(ATTRS), 0.042)
    duration.record(duration.key(ATTRS), 3.0)
    client = telemetry.instruments.client_duration
    client.record(client.key({**CLIENT, "error.type": "UpstreamConnectFailure"}), 0.2)
    telemetry.instruments.response_flags.add(("UF",))


def check(received: Received) -> None:
    assert received.errors == []
    spans = {s.name: s for s in received.spans()}
    assert spans["GET /r"].kind == 2  # SERVER
    assert spans["GET"].kind == 3  # CLIENT
    assert spans["GET"].parent_span_id == spans["GET /r"].span_id
    resource = resource_of(received)
    assert resource["service.name"] == "otlp-proxy"
    assert resource["service.version"] == VERSION
    assert resource["deployment.environment.name"] == "test"
    exports = received.metric(names.HTTP_SERVER_DURATION)
    assert exports
    metric_resource, metric = exports[-1]
    assert metric_resource["service.name"] == "otlp-proxy"
    assert metric.unit == "s"
    [point] = metric.histogram.data_points
    assert tuple(point.explicit_bounds) == names.DURATION_BUCKETS
    assert point.count == 2
    assert point.sum == pytest.approx(3.042)
    assert point.bucket_counts[names.DURATION_BUCKETS.index(0.05)] == 1  # 0.025 < 0.042 <= 0.05
    assert point.bucket_counts[names.DURATION_BUCKETS.index(5.0)] == 1
    assert (point.min, point.max) == (0.042, 3.0)
    assert point.start_time_unix_nano <= point.time_unix_nano
    assert metric.histogram.aggregation_temporality == CUMULATIVE
    assert {kv.key: kv.value for kv in point.attributes} == {
        "http.request.method": AnyValue(string_value="GET"),
        "http.response.status_code": AnyValue(int_value=200),
        "http.route": AnyValue(string_value="/r"),
    }
    [(_, client)] = received.metric(names.HTTP_CLIENT_DURATION)[-1:]
    [point] = client.histogram.data_points
    assert (point.count, client.unit) == (1, "s")
    assert [kv.key for kv in point.attributes] == [*CLIENT, "error.type"]
    [(_, flags)] = received.metric(names.RESPONSE_FLAGS)[-1:]
    assert (flags.sum.is_monotonic, flags.sum.aggregation_temporality) == (True, CUMULATIVE)
    [point] = flags.sum.data_points
    assert point.as_int == 1
    assert point.attributes[0].value.string_value == "UF"


async def test_http_protobuf_spans_and_histogram_arrive_on_close() -> None:
    with http_receiver() as (port, received):
        telemetry = Telemetry.build(
            otlp_config(f"http://127.0.0.1:{port}/", "http/protobuf"), Stats()
        )
        record(telemetry)
        await telemetry.aclose()  # flushes spans, pushes metrics one last time
        assert all(c == "application/x-protobuf" for c in received.content_types)
        check(received)


async def test_grpc_spans_and_periodic_histogram_arrive() -> None:
    with grpc_receiver() as (port, received):
        telemetry = Telemetry.build(otlp_config(f"127.0.0.1:{port}", "grpc", 0.05), Stats())
        try:
            record(telemetry)
            await wait_until(
                lambda: bool(received.metric(names.HTTP_SERVER_DURATION)), "a periodic metric push"
            )
            await telemetry.flush()
            await wait_until(lambda: len(received.spans()) == 2, "two spans over gRPC")
        finally:
            await telemetry.aclose()
        check(received)


async def test_delta_temporality_when_the_exporter_prefers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    with http_receiver() as (port, received):
        config = otlp_config(f"http://127.0.0.1:{port}/", "http/protobuf", interval=0)
        telemetry = Telemetry.build(config, Stats())
        duration = telemetry.instruments.server_duration
        duration.record(duration.key(ATTRS), 0.042)
        duration.record(duration.key(ATTRS), 3.0)
        await telemetry.flush()
        duration.record(duration.key(ATTRS), 0.3)
        await telemetry.aclose()
    assert received.errors == []
    points = [m.histogram for _, m in received.metric(names.HTTP_SERVER_DURATION)]
    assert [h.aggregation_temporality for h in points] == [DELTA, DELTA]
    first, second = (h.data_points[0] for h in points)
    assert (first.count, second.count) == (2, 1)
    assert second.sum == pytest.approx(0.3)
    assert second.start_time_unix_nano == first.time_unix_nano
