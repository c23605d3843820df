"""The JSON access log line: every field, and the trace and span ids when the request was traced."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.trace import SpanContext

from exporters.access_log import AccessLog
from filters.tracing.propagation import Propagation
from filters.tracing.state import RequestTrace
from proxy.http.model import EmptyBody, Request


def _request() -> Request:
    request = Request(b"GET", b"/a?b=1", [], EmptyBody(), http_version="2")
    info = request.info
    info.request_id = b"rid-1"
    info.route_name = "api"
    info.upstream_cluster, info.upstream_host = "backend", "127.0.0.1:18080"
    info.add_flag("UF")
    return request


def test_line_without_tracing(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "access.log"))
    log.record(_request(), 503, None)
    log.close()
    [entry] = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert entry["method"] == "GET"
    assert entry["path"] == "/a?b=1"
    assert entry["protocol"] == "HTTP/2"
    assert (entry["status"], entry["response_flags"]) == (503, "UF")
    assert (entry["route"], entry["upstream_cluster"]) == ("api", "backend")
    assert entry["upstream_host"] == "127.0.0.1:18080"
    assert entry["request_id"] == "rid-1"
    assert entry["trace_id"] is None
    assert entry["span_id"] is None
    assert entry["duration_ms"] >= 0


def test_line_carries_the_server_span_ids(tmp_path: Path) -> None:
    context = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False)
    request = _request()
    request.info.trace = RequestTrace.of(None, Propagation(["tracecontext"]), context)
    log = AccessLog(str(tmp_path / "access.log"))
    log.record(request, 200, None)
    log.close()
    entry = json.loads((tmp_path / "access.log").read_text())
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["span_id"] == "00f067aa0ba902b7"
