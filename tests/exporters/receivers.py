"""Stand-ins for Zipkin and an OTLP collector: real servers on 127.0.0.1, decoding what arrives."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import trio
import yaml
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as ms_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = Path(__file__).resolve().parents[2]
SPEC_IN_SHARED = Path("specs") / "zipkin" / "zipkin2-api.yaml"


def zipkin_spec() -> Path | None:
    """The official Zipkin v2 API spec (not part of this repository): $MESHWIRE_ZIPKIN_SPEC, else
    the project's shared/ folder beside the checkout, where development machines and CI have it."""
    candidates = [ROOT.parent / "shared" / SPEC_IN_SHARED, Path("/work/shared") / SPEC_IN_SHARED]
    if os.environ.get("MESHWIRE_ZIPKIN_SPEC"):
        candidates = [Path(os.environ["MESHWIRE_ZIPKIN_SPEC"])]
    return next((path for path in candidates if path.is_file()), None)


def require_zipkin_spec() -> None:
    """Skip a test that needs the spec where it is missing; under CI=true, fail instead."""
    if zipkin_spec() is not None:
        return
    reason = "the official Zipkin spec is not beside this checkout (../shared/specs/zipkin/)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(f"{reason}; received spans are decoded but not checked against it")


def zipkin_validator() -> jsonschema.Draft4Validator | None:
    """The spec's `definitions` as a draft-4 JSON Schema for a ListOfSpans body; None where the
    spec is not at hand (test_zipkin reports that as a skip, and as a failure under CI=true)."""
    path = zipkin_spec()
    if path is None:
        return None
    spec = yaml.safe_load(path.read_text())
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "definitions": spec["definitions"],
        "$ref": "#/definitions/ListOfSpans",
    }
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


class Received:
    """What one receiver got, shared between its server threads and the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.zipkin: list[dict[str, Any]] = []  # spans, validated
        self.traces: list[ts.ExportTraceServiceRequest] = []
        self.metrics: list[ms.ExportMetricsServiceRequest] = []
        self.errors: list[str] = []  # anything a real backend would have rejected
        self.content_types: list[str] = []

    def spans(self) -> list[trace_pb2.Span]:
        with self.lock:
            requests = list(self.traces)
        return [
            s
            for r in requests
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]

    def zipkin_spans(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.zipkin)

    def metric(self, name: str) -> list[tuple[dict[str, str], metrics_pb2.Metric]]:
        """Every export of the named metric, with the resource attributes it came with."""
        with self.lock:
            requests = list(self.metrics)
        found = []
        for request in requests:
            for rm in request.resource_metrics:
                resource = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    found.extend((resource, m) for m in sm.metrics if m.name == name)
        return found


def _handler(received: Received, validator: jsonschema.Draft4Validator | None) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", ctype: str = "") -> None:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            ctype = self.headers.get("Content-Type", "")
            with received.lock:
                received.content_types.append(ctype)
            if self.path == "/api/v2/spans":
                self._zipkin(body)
            elif self.path in ("/v1/traces", "/v1/metrics"):
                self._otlp(body, ctype)
            else:
                with received.lock:
                    received.errors.append(f"POST to unknown path {self.path}")
                self._reply(404)

        def _zipkin(self, body: bytes) -> None:
            try:
                spans = json.loads(body)
            except ValueError as exc:
                problems = [f"not JSON: {exc}"]
            else:
                problems = [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in (validator.iter_errors(spans) if validator else ())
                ]
            with received.lock:
                if problems:
                    received.errors.extend(problems)
                else:
                    received.zipkin.extend(spans)
            self._reply(400 if problems else 202)

        def _otlp(self, body: bytes, ctype: str) -> None:
            if not ctype.startswith("application/x-protobuf"):
                with received.lock:
                    received.errors.append(f"OTLP content type {ctype!r}")
                self._reply(415)
                return
            is_traces = self.path == "/v1/traces"
            request = (
                ts.ExportTraceServiceRequest() if is_traces else ms.ExportMetricsServiceRequest()
            )
            request.ParseFromString(body)
            with received.lock:
                (received.traces if is_traces else received.metrics).append(request)  # type: ignore[arg-type]
            response = (
                ts.ExportTraceServiceResponse() if is_traces else ms.ExportMetricsServiceResponse()
            )
            self._reply(200, response.SerializeToString(), "application/x-protobuf")

    return Handler


@contextmanager
def http_receiver() -> Iterator[tuple[int, Received]]:
    """Zipkin (`POST /api/v2/spans`, checked against the official spec) and OTLP/HTTP."""
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received, zipkin_validator()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def grpc_receiver() -> Iterator[tuple[int, Received]]:
    """OTLP/gRPC: TraceService/Export and MetricsService/Export."""
    received = Received()

    class Traces(ts_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: ts.ExportTraceServiceRequest, context: object) -> object:
            with received.lock:
                received.traces.append(request)
            return ts.ExportTraceServiceResponse()

    class Metrics(ms_grpc.MetricsServiceServicer):  # type: ignore[misc]
        def Export(self, request: ms.ExportMetricsServiceRequest, context: object) -> object:
            with received.lock:
                received.metrics.append(request)
            return ms.ExportMetricsServiceResponse()

    executor = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(executor)
    ts_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    ms_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, received
    finally:
        server.stop(None).wait()
        executor.shutdown(wait=True)


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never reads or answers: SLOW."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port() -> int:
    """A port nothing listens on: DOWN (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Poll `condition` until it holds; fail (not hang) after `limit` seconds."""
    try:
        with trio.fail_after(limit):
            while True:  # the receivers fill their lists from threads: poll them
                if condition():
                    return
                await trio.sleep(0.01)
    except trio.TooSlowError:
        raise AssertionError(f"timed out waiting for {what}") from None
