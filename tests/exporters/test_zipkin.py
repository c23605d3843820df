"""Spans from Telemetry.build(zipkin=...) reach a Zipkin stand-in and validate against the spec."""

from __future__ import annotations

import time

import trio
import trio.lowlevel
from opentelemetry.trace import SpanKind, Status, StatusCode

from config import schema
from exporters.telemetry import Telemetry
from proxy.stats import Stats
from tests.exporters.receivers import (
    http_receiver,
    require_zipkin_spec,
    wait_until,
    zipkin_validator,
)


def test_the_official_zipkin_spec_is_at_hand_and_rejects_a_bad_span() -> None:
    """Every span the Zipkin stand-in receives is checked against the official v2 API spec."""
    require_zipkin_spec()
    validator = zipkin_validator()
    assert validator is not None
    bad = [{"traceId": "not-hex", "id": "00f067aa0ba902b7", "kind": "SIDEWAYS"}]
    assert len(list(validator.iter_errors(bad))) >= 2


def zipkin_config(port: int) -> schema.Telemetry:
    return schema.Telemetry(
        service_name="edge-proxy",
        resource={"deployment.environment.name": "test"},
        zipkin=schema.ZipkinExporter(endpoint=f"http://127.0.0.1:{port}/api/v2/spans"),
    )


async def test_spans_arrive_valid_with_kind_ids_timestamps_tags_and_service() -> None:
    with http_receiver() as (port, received):
        telemetry = Telemetry.build(zipkin_config(port), Stats())
        tracer = telemetry.tracer
        before_us = time.time_ns() // 1000
        try:
            with tracer.start_as_current_span(
                "GET /orders/{id}",
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "GET", "url.path": "/orders/7"},
            ) as server:
                await trio.lowlevel.checkpoint()
                with tracer.start_as_current_span(
                    "GET",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "server.address": "127.0.0.1",
                        "server.port": 8080,
                        "http.response.status_code": 503,
                    },
                ) as client:
                    client.set_status(Status(StatusCode.ERROR))
                with tracer.start_as_current_span("retry backoff"):  # INTERNAL: no kind
                    await trio.lowlevel.checkpoint()
            await telemetry.flush()
            await wait_until(
                lambda: bool(received.errors) or len(received.zipkin_spans()) >= 3,
                "three zipkin spans",
            )
        finally:
            await telemetry.aclose()
    assert received.errors == []
    spans = {s["name"]: s for s in received.zipkin_spans()}
    assert set(spans) == {"GET /orders/{id}", "GET", "retry backoff"}
    root, child, internal = spans["GET /orders/{id}"], spans["GET"], spans["retry backoff"]
    assert (root["kind"], child["kind"]) == ("SERVER", "CLIENT")
    assert "kind" not in internal
    server_ctx, client_ctx = server.get_span_context(), client.get_span_context()
    assert root["traceId"] == child["traceId"] == format(server_ctx.trace_id, "032x")
    assert root["id"] == format(server_ctx.span_id, "016x")
    assert child["id"] == format(client_ctx.span_id, "016x")
    assert child["parentId"] == internal["parentId"] == root["id"]
    assert "parentId" not in root
    for span in spans.values():
        assert isinstance(span["timestamp"], int)
        assert span["timestamp"] >= before_us  # epoch microseconds
        assert span["duration"] >= 1
        assert span["localEndpoint"]["serviceName"] == "edge-proxy"
        assert span["tags"]["deployment.environment.name"] == "test"
    assert root["timestamp"] <= child["timestamp"]
    assert root["tags"]["http.request.method"] == "GET"
    assert child["tags"]["http.response.status_code"] == "503"  # tag values are strings
    assert "error" in child["tags"]
    assert "error" not in root["tags"]
    assert child["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": 8080}  # Zipkin's dependency
    assert all("debug" not in span for span in spans.values())


async def test_aclose_flushes_spans_ended_just_before() -> None:
    with http_receiver() as (port, received):
        telemetry = Telemetry.build(zipkin_config(port), Stats())
        for n in range(25):
            with telemetry.tracer.start_as_current_span(f"op-{n}"):
                pass
        await telemetry.aclose()  # no flush first: the 5 s batch delay has not passed
        assert len(received.zipkin_spans()) == 25
    assert received.errors == []
    assert telemetry.spans_dropped == 0


def test_receiver_rejects_what_the_plain_sdk_encoder_sends() -> None:
    """The stand-in really validates: the SDK's own encoder writes `"kind": null` for INTERNAL
    spans, which the spec rejects (and which exporters/zipkin.py corrects)."""
    require_zipkin_spec()
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with http_receiver() as (port, received):
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(
            SimpleSpanProcessor(ZipkinExporter(endpoint=f"http://127.0.0.1:{port}/api/v2/spans"))
        )
        with provider.get_tracer("t").start_as_current_span("internal"):
            pass
        provider.shutdown()
    assert received.zipkin_spans() == []
    assert any("kind" in e and "None is not one of" in e for e in received.errors), received.errors
