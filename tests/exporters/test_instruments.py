"""The cheap instruments export exactly what the SDK's instruments exported for the same records."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry

from config import schema
from exporters import names
from exporters.instruments import Instruments
from exporters.metric_points import PointReader
from exporters.metrics_setup import SCOPE, build_meter_provider, seconds_histograms
from exporters.prometheus_text import render_registry
from exporters.span_queue import SpanAccounts
from exporters.telemetry import Telemetry
from proxy.stats import Stats
from proxy.version import VERSION

DELTA = AggregationTemporality.DELTA
GET_200 = {
    names.HTTP_REQUEST_METHOD: "GET",
    names.URL_SCHEME: "http",
    names.HTTP_RESPONSE_STATUS_CODE: 200,
    names.NETWORK_PROTOCOL_VERSION: "1.1",
    names.HTTP_ROUTE: "api",
}
OTHER_503 = {
    names.HTTP_REQUEST_METHOD: "_OTHER",
    names.URL_SCHEME: "https",
    names.HTTP_RESPONSE_STATUS_CODE: 503,
    names.NETWORK_PROTOCOL_VERSION: "2",
    names.ERROR_TYPE: "503",
}
CLIENT_OK = {
    names.HTTP_REQUEST_METHOD: "POST",
    names.SERVER_ADDRESS: "10.0.0.1",
    names.SERVER_PORT: 8080,
    names.HTTP_RESPONSE_STATUS_CODE: 201,
}
CLIENT_FAILED = {
    names.HTTP_REQUEST_METHOD: "GET",
    names.SERVER_ADDRESS: "10.0.0.1",
    names.SERVER_PORT: 8080,
    names.ERROR_TYPE: "UpstreamConnectFailure",
}
# Zero, values on and just past bucket boundaries, the last bound, and past it.
SERVER_RECORDS = [
    (GET_200, 0.0),
    (GET_200, 0.005),
    (GET_200, 0.0050001),
    (OTHER_503, 0.042),
    (GET_200, 10.0),
    (OTHER_503, 12.5),
]
CLIENT_RECORDS = [(CLIENT_OK, 0.001), (CLIENT_FAILED, 0.75), (CLIENT_OK, 2.5)]
FLAGS = ["UF", "UF", "NR"]


class SdkInstruments:
    """The SDK instruments the data plane recorded into before, created as they were."""

    def __init__(self, meter: Meter) -> None:
        cheap = Instruments()
        self.server = meter.create_histogram(
            names.HTTP_SERVER_DURATION,
            unit="s",
            description=cheap.server_duration.description,
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )
        self.flags = meter.create_counter(
            names.RESPONSE_FLAGS, unit="{response}", description=cheap.response_flags.description
        )
        self.client = meter.create_histogram(
            names.HTTP_CLIENT_DURATION,
            unit="s",
            description=cheap.client_duration.description,
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )


def record_both(cheap: Instruments, sdk: SdkInstruments, part: slice = slice(None)) -> None:
    for attributes, value in SERVER_RECORDS[part]:
        sdk.server.record(value, attributes)
        cheap.server_duration.record(cheap.server_duration.key(attributes), value)
    for attributes, value in CLIENT_RECORDS[part]:
        sdk.client.record(value, attributes)
        cheap.client_duration.record(cheap.client_duration.key(attributes), value)
    for flag in FLAGS[part]:
        sdk.flags.add(1, {names.RESPONSE_FLAGS_ATTR: flag})
        cheap.response_flags.add((flag,))


def families(text: str) -> dict[str, list[str]]:
    """Each family's lines (HELP, TYPE, samples in order), by name; family order is not kept."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if m := re.match(r"# HELP (\S+) ", line):
            current = found.setdefault(m.group(1), [])
        current.append(line)
    return found


def comparable(metrics: Iterable[Metric], with_min_max: bool = True) -> dict[str, object]:
    """Everything an exporter sends of each metric but the timestamps."""
    found: dict[str, object] = {}
    for metric in metrics:
        if metric.name == names.SPANS_DROPPED:
            continue
        data = metric.data
        points = []
        for p in data.data_points:
            attributes = tuple((p.attributes or {}).items())
            if isinstance(p, HistogramDataPoint):
                extremes = (p.min, p.max) if with_min_max else ()
                counts, bounds = tuple(p.bucket_counts), tuple(p.explicit_bounds)
                # The SDK adds a cumulative sum up interval by interval: equal up to rounding.
                total = round(p.sum, 9)
                points.append((attributes, p.count, total, counts, bounds, *extremes))
            else:
                assert isinstance(p, NumberDataPoint)
                points.append((attributes, p.value))
        found[metric.name] = (
            metric.description,
            metric.unit,
            type(data).__name__,
            data.aggregation_temporality,  # type: ignore[union-attr]
            getattr(data, "is_monotonic", None),
            points,
        )
    return found


def no_spans_dropped(options: CallbackOptions) -> list[Observation]:
    return [Observation(0)]


def sdk_metrics(reader: InMemoryMetricReader) -> list[Metric]:
    data = reader.get_metrics_data()
    assert data is not None
    [resource_metrics] = data.resource_metrics
    [scope_metrics] = resource_metrics.scope_metrics
    assert scope_metrics.scope == SCOPE
    return list(scope_metrics.metrics)


def test_prometheus_exposition_is_what_the_sdk_instruments_gave() -> None:
    resource = Resource.create({"service.name": "same"})
    # Before: SDK instruments behind the SDK's Prometheus reader.
    old_registry = CollectorRegistry(auto_describe=False)
    old_provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=old_registry)],
        resource=resource,
        views=[seconds_histograms()],
    )
    # Now: the cheap instruments, read by the readers build_meter_provider makes.
    cheap = Instruments()
    new_provider, new_registry = build_meter_provider(schema.Telemetry(), resource, cheap)
    for provider in (old_provider, new_provider):  # as Telemetry registers it
        meter = provider.get_meter(names.SCOPE, VERSION)
        meter.create_observable_counter(names.SPANS_DROPPED, callbacks=[no_spans_dropped])
    sdk = SdkInstruments(old_provider.get_meter(names.SCOPE, VERSION))
    record_both(cheap, sdk)
    old = families(render_registry(old_registry))
    new = families(render_registry(new_registry))
    assert new == old
    assert {"http_server_request_duration_seconds", "meshwire_response_flags_total"} <= set(new)
    assert {"http_client_request_duration_seconds", "target_info"} <= set(new)
    for provider in (old_provider, new_provider):
        provider.shutdown()


def test_cumulative_points_are_what_the_sdk_aggregated() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[seconds_histograms()])
    sdk = SdkInstruments(provider.get_meter(names.SCOPE, VERSION))
    cheap = Instruments()
    points = PointReader(cheap, SCOPE)
    record_both(cheap, sdk, slice(0, 2))
    assert comparable(points.metrics()) == comparable(sdk_metrics(reader))
    record_both(cheap, sdk, slice(2, None))
    assert comparable(points.metrics()) == comparable(sdk_metrics(reader))


def test_delta_points_are_what_the_sdk_aggregated_over_each_interval() -> None:
    temporality: dict[type, AggregationTemporality] = {Histogram: DELTA, Counter: DELTA}
    reader = InMemoryMetricReader(preferred_temporality=temporality)
    provider = MeterProvider(metric_readers=[reader], views=[seconds_histograms()])
    sdk = SdkInstruments(provider.get_meter(names.SCOPE, VERSION))
    cheap = Instruments()
    points = PointReader(cheap, SCOPE, histograms=DELTA, counters=DELTA)
    record_both(cheap, sdk, slice(0, 2))
    first = points.metrics()
    assert comparable(first, False) == comparable(sdk_metrics(reader), False)
    record_both(cheap, sdk, slice(2, None))
    second = points.metrics()
    assert comparable(second, False) == comparable(sdk_metrics(reader), False)
    # A series' next interval starts where its last one ended; a quiet interval exports nothing.
    [before] = {m.name: m for m in first}[names.HTTP_SERVER_DURATION].data.data_points
    after = {m.name: m for m in second}[names.HTTP_SERVER_DURATION].data.data_points
    [again] = [p for p in after if p.attributes == before.attributes]
    assert again.start_time_unix_nano == before.time_unix_nano
    assert points.metrics() == []


@pytest.mark.parametrize("value", [0.0, 0.005, 0.00500001, 10.0, 1e9])
def test_bucket_rule_is_the_sdks(value: float) -> None:
    """A value equal to a bound counts in the bucket that bound closes (OTel: upper-inclusive)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[seconds_histograms()])
    sdk = SdkInstruments(provider.get_meter(names.SCOPE, VERSION))
    cheap = Instruments()
    sdk.server.record(value, GET_200)
    cheap.server_duration.record(cheap.server_duration.key(GET_200), value)
    expected = comparable(sdk_metrics(reader))
    assert comparable(PointReader(cheap, SCOPE).metrics()) == expected


def test_a_telemetry_with_no_sdk_data_still_exports_the_cheap_instruments() -> None:
    """SDK readers hear of a collection only when the SDK has a point of its own: Telemetry's
    spans_dropped counter is that point, always."""
    cheap = Instruments()
    provider, registry = build_meter_provider(schema.Telemetry(), Resource.create({}), cheap)
    telemetry = Telemetry(
        NoOpTracerProvider(),
        provider,
        registry=registry,
        accounts=SpanAccounts(Stats()),
        instruments=cheap,
    )
    cheap.response_flags.add(("UF",))
    assert 'meshwire_response_flags_total{meshwire_response_flags="UF"' in (
        telemetry.prometheus_text()
    )
    provider.shutdown()


def test_a_collector_thread_reads_while_the_loop_records() -> None:
    """The OTLP push collects on its own thread while the trio thread records, unlocked."""
    cheap = Instruments()
    points = PointReader(cheap, SCOPE)
    stop = threading.Event()
    errors: list[BaseException] = []

    def collect() -> None:
        while not stop.is_set():
            try:
                points.metrics()
            except BaseException as exc:
                errors.append(exc)
                return

    collector = threading.Thread(target=collect)
    collector.start()
    duration = cheap.server_duration
    try:
        for i in range(20_000):  # new series keep appearing while the collector iterates
            duration.record(("GET", "http", 200 + i % 300, "1.1", f"r{i % 97}", None), 0.01)
    finally:
        stop.set()
        collector.join()
    assert errors == []
    [metric] = points.metrics()
    assert sum(p.count for p in metric.data.data_points) == 20_000
    assert len(metric.data.data_points) == len({(i % 300, i % 97) for i in range(20_000)})
