"""/stats/prometheus: meshwire's stats plus the OTel metrics, one exposition promtool accepts."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import trio

from config import schema
from exporters import names
from exporters.telemetry import Telemetry
from proxy.admin.handler import AdminHandler
from proxy.app import build
from proxy.http.model import BytesBody, Request
from proxy.stats import ClusterStats, ListenerStats

ATTRS = {"http.request.method": "GET", "http.response.status_code": 200, "http.route": "/r"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is missing (Debian package prometheus; `make test-tools` installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


async def scrape() -> tuple[str, Telemetry]:
    listener = schema.Listener(
        name="ingress",
        address="127.0.0.1:0",
        routes=[
            schema.Route(
                match=schema.RouteMatch(prefix="/"),
                direct_response=schema.DirectResponse(status=200),
            )
        ],
    )
    config = schema.Config(
        admin=None, listeners=[listener], telemetry=schema.Telemetry(service_name="prom-proxy")
    )
    app = build(config)
    ListenerStats(app.stats, "ingress").response(200)
    ClusterStats(app.stats, "backend").response(503)
    telemetry = app.telemetry
    duration = telemetry.instruments.server_duration
    duration.record(duration.key(ATTRS), 0.042)
    app.listeners[0].stats.rq_active.inc()  # observed from the codecs' gauge at scrape time
    handler = AdminHandler(app, trio.Event(), trio.Event())
    response = await handler(Request(b"GET", b"/stats/prometheus", [], BytesBody(b"")))
    assert response.status == 200
    return (await response.body.read()).decode(), telemetry


async def test_exposition_passes_promtool_and_has_semconv_buckets() -> None:
    tool = promtool()
    text, telemetry = await scrape()
    try:
        result = await trio.run_process(
            [tool, "check", "metrics"],
            stdin=text.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    finally:
        await telemetry.aclose()
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, problems + "\n" + text
    assert problems.strip() == "", problems


async def test_one_family_per_name_with_help_and_both_sources() -> None:
    text, telemetry = await scrape()
    await telemetry.aclose()
    typed = re.findall(r"^# TYPE (\S+) ", text, re.M)
    helped = re.findall(r"^# HELP (\S+) ", text, re.M)
    assert len(typed) == len(set(typed))  # no duplicate families
    assert sorted(typed) == sorted(helped)
    # meshwire's own counters, the spans_dropped counter once (not again from OTel), target_info
    assert 'meshwire_http_downstream_rq_2xx_total{listener="ingress"} 1' in text
    assert 'meshwire_cluster_upstream_rq_5xx_total{cluster_name="backend"} 1' in text
    assert typed.count("meshwire_telemetry_spans_dropped_total") == 1
    assert 'service_name="prom-proxy"' in text
    buckets = re.findall(
        r'^http_server_request_duration_seconds_bucket\{.*le="([^"]+)".*\} (\S+)$', text, re.M
    )
    bounds = [float(le) for le, _ in buckets if le != "+Inf"]
    assert bounds == list(names.DURATION_BUCKETS)
    counts = {le: float(v) for le, v in buckets}
    assert (counts["0.025"], counts["0.05"], counts["+Inf"]) == (0.0, 1.0, 1.0)
    assert "http_server_active_requests{" in text


async def test_without_exporters_spans_are_free_and_context_passes_through() -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    telemetry = build(schema.Config(admin=None)).telemetry
    incoming = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = trace.set_span_in_context(NonRecordingSpan(incoming))
    with telemetry.tracer.start_as_current_span("GET", context=parent) as span:
        assert not span.is_recording()
        assert span.get_span_context() == incoming  # injected upstream unchanged, still sampled
    await telemetry.aclose()
    assert Telemetry.noop().prometheus_text() == ""
