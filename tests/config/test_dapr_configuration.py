"""Dapr Configuration resources: spec.tracing maps onto meshwire's telemetry and tracing filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import schema
from config.dapr.configuration import (
    DEFAULT_SAMPLING_RATE,
    DaprConfigError,
    expand_env,
    load_tracing,
    tracing_from_resource,
    with_dapr_tracing,
)

FULL = """
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: appconfig}
spec:
  tracing:
    samplingRate: "0.25"
    stdout: true
    zipkin: {endpointAddress: "http://localhost:9411/api/v2/spans"}
    otel: {endpointAddress: "localhost:4317", isSecure: false, protocol: grpc, headers: ["k=v"]}
  accessControl: {defaultAction: deny}
"""


def test_full_tracing_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FULL)
    tracing = load_tracing(path, service_name="orders")
    assert tracing.sampling_rate == 0.25
    telemetry = tracing.telemetry
    assert telemetry.service_name == "orders"
    assert telemetry.console is True
    assert telemetry.zipkin == schema.ZipkinExporter(endpoint="http://localhost:9411/api/v2/spans")
    assert telemetry.otlp is not None
    assert telemetry.otlp.endpoint == "http://localhost:4317"
    assert telemetry.otlp.protocol == "grpc"
    assert telemetry.otlp.headers == {"k": "v"}
    assert tracing.ignored == ("accessControl",)


def test_otel_over_http_defaults_to_secure() -> None:
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "spec": {
            "tracing": {
                "samplingRate": "1",
                "otel": {"endpointAddress": "collector:4318", "protocol": "http"},
            }
        },
    }
    otlp = tracing_from_resource(doc).telemetry.otlp
    assert otlp is not None
    assert (otlp.endpoint, otlp.protocol, otlp.insecure) == (
        "https://collector:4318",
        "http/protobuf",
        False,
    )


@pytest.mark.parametrize(
    ("raw", "rate"),
    [
        ("1", 1.0),
        ("0", 0.0),
        ("", DEFAULT_SAMPLING_RATE),
        ("lots", DEFAULT_SAMPLING_RATE),
        ("7", 1.0),
    ],
)
def test_sampling_rate_is_a_string_float_with_daprs_default(raw: str, rate: float) -> None:
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "spec": {"tracing": {"samplingRate": raw}},
    }
    assert tracing_from_resource(doc).sampling_rate == rate


def test_every_problem_is_reported_with_its_path() -> None:
    doc = {
        "apiVersion": "dapr.io/v2",
        "kind": "Configuration",
        "spec": {"tracing": {"otel": {"protocol": "udp", "isSecure": "no"}}},
    }
    with pytest.raises(DaprConfigError) as info:
        tracing_from_resource(doc)
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "$.apiVersion",
        "$.spec.tracing.otel.endpointAddress",
        "$.spec.tracing.otel.protocol",
        "$.spec.tracing.otel.isSecure",
    ]


def test_env_is_expanded_like_daprd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIPKIN_HOST", "zipkin.local")
    monkeypatch.delenv("NOT_SET", raising=False)
    assert expand_env("http://${ZIPKIN_HOST}:9411/$NOT_SET") == "http://zipkin.local:9411/"


def test_applying_tracing_puts_one_tracing_filter_first() -> None:
    listener = schema.Listener(
        name="l",
        address="127.0.0.1:0",
        filters=[schema.TracingFilter(sampling_rate=1.0), schema.RouterFilter()],
        routes=[schema.Route(match=schema.RouteMatch(prefix="/"), cluster="c")],
    )
    config = schema.Config(
        listeners=[listener], clusters=[schema.Cluster(name="c", endpoints=["127.0.0.1:1"])]
    )
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "spec": {"tracing": {"samplingRate": "0.5"}},
    }
    applied = with_dapr_tracing(config, tracing_from_resource(doc))
    filters = applied.listeners[0].filters
    assert filters == [schema.TracingFilter(sampling_rate=0.5), schema.RouterFilter()]


def test_a_file_without_a_configuration_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "component.yaml"
    path.write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\n")
    with pytest.raises(DaprConfigError, match="no Configuration"):
        load_tracing(path)
