"""The tracing filter against a stub handler: propagation, sampling, span shape and lifetime."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config import schema
from exporters import names
from exporters.metric_points import PointReader
from exporters.metrics_setup import SCOPE
from exporters.telemetry import Telemetry
from exporters.tracing_setup import sdk_tracing
from filters.registry import BuildContext, build_filter
from filters.tracing.client import Upstream, observed_attempt
from filters.tracing.filter import TracingFilter
from filters.tracing.propagation import Propagation
from proxy.chain import Handler
from proxy.http.errors import NoRoute, UpstreamConnectFailure
from proxy.http.model import BytesBody, Headers, Request, Response, StreamInfo
from proxy.routing import RouteTable
from proxy.stats import Stats
from proxy.upstream.manager import ClusterManager
from proxy.upstream.outgoing import RetryableReset

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
B3_TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
B3_SPAN = "e457b5a2e4d86bd1"
UPSTREAM = Upstream("backend", "10.1.2.3", 8080, tls=False)


class ChunkBody:
    """A streaming body of fixed chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.length: int | None = None
        self.trailers: Headers | None = None

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        self.chunks.clear()


class Traced:
    """An SDK tracer/meter recording in memory, and a TracingFilter built on it."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider, spans = sdk_tracing(Resource.create({}), [SimpleSpanProcessor(self.exporter)])
        self.telemetry = Telemetry(provider, NoOpMeterProvider(), spans=spans)
        self.recorder = spans
        self.upstream_headers: list[Headers] = []

    def filter(
        self, rate: float = 1.0, propagators: tuple[str, ...] = ("tracecontext", "b3multi")
    ) -> TracingFilter:
        return TracingFilter(self.recorder, rate, propagators, {"api": "/api/*"})

    def client_durations(self) -> list[HistogramDataPoint]:
        """The client duration's points, as a metric reader would export them."""
        found = PointReader(self.telemetry.instruments, SCOPE).metrics()
        return [
            p  # type: ignore[misc]
            for m in found
            if m.name == names.HTTP_CLIENT_DURATION
            for p in m.data.data_points
        ]

    def spans(self, kind: trace.SpanKind | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if kind is None or s.kind == kind]

    def upstream(self, status: int = 200, body: bytes = b"ok", fail_first: bool = False) -> Handler:
        """A stub router: route "api", then one (or a retried) observed upstream attempt."""

        async def handler(request: Request) -> Response:
            request.info.route_name = "api"
            attempts = iter([True, False] if fail_first else [False])

            async def send() -> Response:
                self.upstream_headers.append(list(request.headers))
                if next(attempts):
                    raise RetryableReset("stale")
                return Response(status, [], ChunkBody(body))

            tele = self.telemetry
            try:
                return await observed_attempt(tele, request, UPSTREAM, False, send)
            except RetryableReset:
                return await observed_attempt(tele, request, UPSTREAM, True, send)

        return handler

    def sent(self, name: bytes, attempt: int = -1) -> list[bytes]:
        return [v for k, v in self.upstream_headers[attempt] if k == name]


def make_request(headers: Headers | None = None, method: bytes = b"GET") -> Request:
    return Request(
        method,
        b"/api/items?page=2",
        [(b"user-agent", b"curl/8"), *(headers or [])],
        BytesBody(b""),
        authority=b"shop.test:8443",
        info=StreamInfo(downstream_addr="10.0.0.7:50123"),
    )


async def drain(response: Response) -> bytes:
    parts = []
    while chunk := await response.body.read():
        parts.append(chunk)
    return b"".join(parts)


async def run(traced: Traced, tf: TracingFilter, request: Request, **kw: object) -> Response:
    response = await tf(request, traced.upstream(**kw))  # type: ignore[arg-type]
    await drain(response)
    return response


def traceparent(value: bytes) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.decode().split("-")
    assert version == "00"
    return trace_id, span_id, flags


@pytest.fixture
def traced() -> Traced:
    return Traced()


async def test_w3c_parent_is_continued_and_the_client_span_is_propagated(traced: Traced) -> None:
    incoming = [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()), (b"tracestate", b"k=v")]
    await run(traced, traced.filter(), make_request(incoming))
    (server,) = traced.spans(trace.SpanKind.SERVER)
    (client,) = traced.spans(trace.SpanKind.CLIENT)
    assert server.context is not None
    assert client.context is not None
    assert f"{server.context.trace_id:032x}" == TRACE
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == PARENT
    assert server.parent.is_remote
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    (sent,) = traced.sent(b"traceparent")
    assert traceparent(sent) == (TRACE, f"{client.context.span_id:016x}", "01")
    assert traced.sent(b"tracestate") == [b"k=v"]
    assert client.context.trace_state.get("k") == "v"
    assert traced.sent(b"x-b3-traceid") == [TRACE.encode()]


async def test_b3_single_in_becomes_w3c_and_b3_out(traced: Traced) -> None:
    incoming = [(b"b3", f"{B3_TRACE}-{B3_SPAN}-1".encode())]
    await run(traced, traced.filter(propagators=("tracecontext", "b3")), make_request(incoming))
    (server,) = traced.spans(trace.SpanKind.SERVER)
    (client,) = traced.spans(trace.SpanKind.CLIENT)
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == B3_SPAN
    assert client.context is not None
    (sent,) = traced.sent(b"traceparent")
    assert traceparent(sent) == (B3_TRACE, f"{client.context.span_id:016x}", "01")
    assert traced.sent(b"b3") == [f"{B3_TRACE}-{client.context.span_id:016x}-1".encode()]


async def test_b3_multi_in_is_replaced_not_duplicated(traced: Traced) -> None:
    incoming = [
        (b"x-b3-traceid", B3_TRACE.encode()),
        (b"x-b3-spanid", B3_SPAN.encode()),
        (b"x-b3-parentspanid", b"05e3ac9a4f6e3b90"),
        (b"x-b3-sampled", b"1"),
    ]
    await run(traced, traced.filter(), make_request(incoming))
    (server,) = traced.spans(trace.SpanKind.SERVER)
    (client,) = traced.spans(trace.SpanKind.CLIENT)
    assert server.context is not None
    assert client.context is not None
    assert f"{server.context.trace_id:032x}" == B3_TRACE
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == B3_SPAN
    assert traced.sent(b"x-b3-traceid") == [B3_TRACE.encode()]
    assert traced.sent(b"x-b3-spanid") == [f"{client.context.span_id:016x}".encode()]
    assert traced.sent(b"x-b3-sampled") == [b"1"]
    assert traced.sent(b"x-b3-parentspanid") == []


@pytest.mark.parametrize(
    ("propagators", "expected"),
    [(("tracecontext", "b3"), TRACE), (("b3", "tracecontext"), B3_TRACE)],
)
async def test_the_first_configured_propagator_present_wins(
    traced: Traced, propagators: tuple[str, ...], expected: str
) -> None:
    incoming = [
        (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
        (b"b3", f"{B3_TRACE}-{B3_SPAN}-1".encode()),
    ]
    await run(traced, traced.filter(propagators=propagators), make_request(incoming))
    (server,) = traced.spans(trace.SpanKind.SERVER)
    assert server.context is not None
    assert f"{server.context.trace_id:032x}" == expected


async def test_b3_single_header_takes_precedence_over_multi(traced: Traced) -> None:
    incoming = [
        (b"x-b3-traceid", TRACE.encode()),
        (b"x-b3-spanid", PARENT.encode()),
        (b"b3", f"{B3_TRACE}-{B3_SPAN}-1".encode()),
    ]
    await run(traced, traced.filter(propagators=("b3multi",)), make_request(incoming))
    (server,) = traced.spans(trace.SpanKind.SERVER)
    assert server.context is not None
    assert f"{server.context.trace_id:032x}" == B3_TRACE
    assert traced.sent(b"b3") == []  # the stale single header does not travel on


async def test_no_context_starts_a_new_root(traced: Traced) -> None:
    await run(traced, traced.filter(), make_request())
    (server,) = traced.spans(trace.SpanKind.SERVER)
    (client,) = traced.spans(trace.SpanKind.CLIENT)
    assert server.parent is None
    assert server.context is not None
    assert client.context is not None
    assert client.context.trace_id == server.context.trace_id


async def test_rate_zero_records_nothing_but_propagates_not_sampled(traced: Traced) -> None:
    await run(traced, traced.filter(rate=0.0), make_request())
    assert traced.spans() == []
    trace_id, span_id, flags = traceparent(traced.sent(b"traceparent")[0])
    assert int(flags, 16) & 1 == 0
    assert int(trace_id, 16)
    assert int(span_id, 16)
    assert traced.sent(b"x-b3-sampled") == [b"0"]


async def test_an_unsampled_root_keeps_the_trace_id_it_first_sent(traced: Traced) -> None:
    request = make_request()
    await run(traced, traced.filter(rate=0.0), request, fail_first=True)
    first, second = (traceparent(traced.sent(b"traceparent", i)[0]) for i in (0, 1))
    assert first[0] == second[0]  # both attempts carry one trace, each with its own span id
    assert first[1] != second[1]
    state = request.info.trace
    assert state is not None
    assert f"{state.trace_id:032x}" == first[0] == f"{state.span_context.trace_id:032x}"
    assert state.span_id not in (int(first[1], 16), int(second[1], 16))
    assert not state.span_context.trace_flags.sampled


async def test_rate_one_records(traced: Traced) -> None:
    await run(traced, traced.filter(rate=1.0), make_request())
    assert len(traced.spans()) == 2


async def test_a_sampled_parent_decides_over_the_rate(traced: Traced) -> None:
    incoming = [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]
    await run(traced, traced.filter(rate=0.0), make_request(incoming))
    assert len(traced.spans()) == 2


async def test_an_unsampled_parent_decides_over_the_rate(traced: Traced) -> None:
    incoming = [(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode())]
    await run(traced, traced.filter(rate=1.0), make_request(incoming))
    assert traced.spans() == []
    trace_id, span_id, flags = traceparent(traced.sent(b"traceparent")[0])
    assert (trace_id, flags) == (TRACE, "00")
    assert span_id != PARENT


async def test_b3_deny_is_not_sampled(traced: Traced) -> None:
    await run(traced, traced.filter(rate=1.0), make_request([(b"b3", b"0")]))
    assert traced.spans() == []
    assert int(traceparent(traced.sent(b"traceparent")[0])[2], 16) & 1 == 0


async def test_a_routed_200_names_the_span_after_the_route(traced: Traced) -> None:
    request = make_request([(b"x-request-id", b"rid-1")])
    request.info.request_id = b"rid-1"
    await run(traced, traced.filter(), request)
    (server,) = traced.spans(trace.SpanKind.SERVER)
    assert server.name == "GET /api/*"
    assert server.status.status_code == trace.StatusCode.UNSET
    assert (server.dropped_attributes, server.dropped_events, server.dropped_links) == (0, 0, 0)
    assert dict(server.attributes or {}) == {
        names.HTTP_REQUEST_METHOD: "GET",
        names.URL_PATH: "/api/items",
        names.URL_QUERY: "page=2",
        names.URL_SCHEME: "http",
        names.NETWORK_PROTOCOL_VERSION: "1.1",
        names.SERVER_ADDRESS: "shop.test",
        names.SERVER_PORT: 8443,
        names.CLIENT_ADDRESS: "10.0.0.7",
        names.USER_AGENT: "curl/8",
        names.REQUEST_ID: "rid-1",
        names.HTTP_ROUTE: "/api/*",
        names.HTTP_RESPONSE_STATUS_CODE: 200,
    }
    (client,) = traced.spans(trace.SpanKind.CLIENT)
    assert client.name == "GET"
    assert dict(client.attributes or {}) == {
        names.HTTP_REQUEST_METHOD: "GET",
        names.SERVER_ADDRESS: "10.1.2.3",
        names.SERVER_PORT: 8080,
        names.URL_FULL: "http://10.1.2.3:8080/api/items?page=2",
        names.UPSTREAM_CLUSTER: "backend",
        names.HTTP_RESPONSE_STATUS_CODE: 200,
    }


async def test_no_route_404_is_named_by_method_and_not_an_error(traced: Traced) -> None:
    async def no_route(request: Request) -> Response:
        raise NoRoute("no route")

    with pytest.raises(NoRoute):
        await traced.filter()(make_request(), no_route)
    (server,) = traced.spans()
    assert server.name == "GET"
    attrs = dict(server.attributes or {})
    assert attrs[names.HTTP_RESPONSE_STATUS_CODE] == 404
    assert attrs[names.RESPONSE_FLAGS_ATTR] == "NR"
    assert names.HTTP_ROUTE not in attrs
    assert names.ERROR_TYPE not in attrs
    assert server.status.status_code == trace.StatusCode.UNSET


async def test_upstream_connect_failure_is_a_503_error_with_flag_uf(traced: Traced) -> None:
    async def unreachable(request: Request) -> Response:
        request.info.route_name = "api"
        raise UpstreamConnectFailure("refused")

    with pytest.raises(UpstreamConnectFailure):
        await traced.filter()(make_request(), unreachable)
    (server,) = traced.spans()
    assert server.name == "GET /api/*"
    attrs = dict(server.attributes or {})
    assert attrs[names.HTTP_RESPONSE_STATUS_CODE] == 503
    assert attrs[names.RESPONSE_FLAGS_ATTR] == "UF"
    assert attrs[names.ERROR_TYPE] == "503"
    assert server.status.status_code == trace.StatusCode.ERROR


async def test_an_upstream_5xx_is_an_error_on_both_spans(traced: Traced) -> None:
    await run(traced, traced.filter(), make_request(), status=502)
    for span in traced.spans():
        assert span.status.status_code == trace.StatusCode.ERROR
        assert dict(span.attributes or {})[names.ERROR_TYPE] == "502"


async def test_a_4xx_is_an_error_on_the_client_span_only(traced: Traced) -> None:
    await run(traced, traced.filter(), make_request(), status=404)
    (server,) = traced.spans(trace.SpanKind.SERVER)
    (client,) = traced.spans(trace.SpanKind.CLIENT)
    assert server.status.status_code == trace.StatusCode.UNSET
    assert client.status.status_code == trace.StatusCode.ERROR


async def test_spans_end_only_after_the_body_was_consumed(traced: Traced) -> None:
    response = await traced.filter()(make_request(), traced.upstream(body=b"abc"))
    assert traced.spans() == []
    assert await response.body.read() == b"abc"
    assert traced.spans() == []
    assert await response.body.read() == b""
    assert {s.kind for s in traced.spans()} == {trace.SpanKind.SERVER, trace.SpanKind.CLIENT}


async def test_an_abandoned_body_still_ends_the_spans(traced: Traced) -> None:
    response = await traced.filter()(make_request(), traced.upstream(body=b"abc"))
    await response.body.aclose()
    assert len(traced.spans()) == 2


async def test_each_attempt_is_a_client_span_with_its_own_span_id(traced: Traced) -> None:
    await run(traced, traced.filter(), make_request(), fail_first=True)
    (server,) = traced.spans(trace.SpanKind.SERVER)
    first, second = traced.spans(trace.SpanKind.CLIENT)
    assert first.context is not None
    assert second.context is not None
    assert dict(first.attributes or {})[names.ERROR_TYPE] == "RetryableReset"
    assert names.HTTP_RESEND_COUNT not in dict(first.attributes or {})
    assert dict(second.attributes or {})[names.HTTP_RESEND_COUNT] == 1
    for span in (first, second):
        assert span.parent is not None
        assert server.context is not None
        assert span.parent.span_id == server.context.span_id
    assert traceparent(traced.sent(b"traceparent", 0)[0])[1] == f"{first.context.span_id:016x}"
    assert traceparent(traced.sent(b"traceparent", 1)[0])[1] == f"{second.context.span_id:016x}"


async def test_unknown_methods_are_other(traced: Traced) -> None:
    await run(traced, traced.filter(), make_request(method=b"PURGE"))
    (server,) = traced.spans(trace.SpanKind.SERVER)
    assert server.name == "HTTP /api/*"
    attrs = dict(server.attributes or {})
    assert attrs[names.HTTP_REQUEST_METHOD] == "_OTHER"
    assert attrs["http.request.method_original"] == "PURGE"


async def test_the_server_span_is_current_while_the_handler_runs(traced: Traced) -> None:
    seen: list[trace.SpanContext] = []

    async def handler(request: Request) -> Response:
        seen.append(trace.get_current_span().get_span_context())
        return Response(200)

    await drain(await traced.filter()(make_request(), handler))
    (server,) = traced.spans()
    assert seen == [server.context]
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_client_duration_is_recorded_per_attempt(traced: Traced) -> None:
    await run(traced, traced.filter(rate=0.0), make_request(), fail_first=True)
    points = traced.client_durations()
    by_error = {dict(p.attributes or {}).get(names.ERROR_TYPE): p for p in points}
    assert set(by_error) == {"RetryableReset", None}
    assert dict(by_error[None].attributes or {}) == {
        names.HTTP_REQUEST_METHOD: "GET",
        names.SERVER_ADDRESS: "10.1.2.3",
        names.SERVER_PORT: 8080,
        names.HTTP_RESPONSE_STATUS_CODE: 200,
    }


async def test_without_trace_state_only_the_metric_is_recorded(traced: Traced) -> None:
    request = make_request([(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())])
    await drain(await traced.upstream()(request))
    assert traced.spans() == []
    assert traced.sent(b"traceparent") == [f"00-{TRACE}-{PARENT}-01".encode()]
    assert [p.count for p in traced.client_durations()] == [1]


async def test_cancellation_ends_the_span_without_an_error_status(traced: Traced) -> None:
    async def hang(request: Request) -> Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.move_on_after(0):
        await traced.filter()(make_request(), hang)
    (server,) = traced.spans()
    assert dict(server.attributes or {})[names.ERROR_TYPE] == "Cancelled"
    assert server.status.status_code == trace.StatusCode.UNSET
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_without_a_span_exporter_the_context_passes_through_unchanged() -> None:
    telemetry = Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider())
    ctx = BuildContext(RouteTable.build([]), ClusterManager([], Stats()), telemetry)
    incoming = (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())
    tf = build_filter(schema.TracingFilter(), ctx)
    for _ in range(2):
        request = make_request([incoming])
        await drain(await tf(request, trio_ok))
        assert incoming in request.headers
        assert request.info.trace is None


async def trio_ok(request: Request) -> Response:
    await trio.lowlevel.checkpoint()
    return Response(204)


def test_route_templates_are_the_configured_patterns() -> None:
    routes = [
        schema.Route(match=schema.RouteMatch(path="/health"), cluster="c"),
        schema.Route(match=schema.RouteMatch(prefix="/api/"), cluster="c"),
        schema.Route(match=schema.RouteMatch(regex="/v[0-9]+/.*"), cluster="c"),
        schema.Route(match=schema.RouteMatch(), cluster="c"),
    ]
    templates = [e.template for e in RouteTable.build(routes).entries]
    assert templates == ["/health", "/api/*", "/v[0-9]+/.*", "/*"]


@pytest.mark.parametrize(
    ("flags", "state"),
    [(0x01, ""), (0x00, ""), (0x03, "vendor=opaque,other=1"), (0x02, "k=v")],
)
def test_injected_fields_are_what_the_otel_propagators_write(flags: int, state: str) -> None:
    context = trace.SpanContext(
        int(TRACE, 16),
        int(PARENT, 16),
        is_remote=False,
        trace_flags=trace.TraceFlags(flags),
        trace_state=trace.TraceState.from_header([state]) if state else trace.TraceState(),
    )
    otel_ctx = trace.set_span_in_context(trace.NonRecordingSpan(context))
    for names_ in (["tracecontext"], ["b3"], ["b3multi"], ["tracecontext", "b3", "b3multi"]):
        expected: dict[str, str] = {}
        for name in names_:
            {"tracecontext": TraceContextTextMapPropagator, "b3": B3SingleFormat}.get(
                name, B3MultiFormat
            )().inject(expected, otel_ctx)
        stale = [(b"traceparent", b"old"), (b"tracestate", b"old=1"), (b"b3", b"0")]
        stale += [(b"x-b3-flags", b"1"), (b"x-b3-spanid", b"old")]
        injected = Propagation(names_).inject(
            [*stale, (b"a", b"b")],
            context.trace_id,
            context.span_id,
            context.trace_flags,
            context.trace_state,
        )
        # Every configured format's stale fields are gone, and only those; the rest is kept.
        kept = injected[: len(injected) - len(expected)]
        assert kept[-1] == (b"a", b"b")
        assert all(
            (name == b"x-b3-flags" or name.decode() not in expected) for name, _ in kept[:-1]
        )
        assert {k.decode(): v.decode() for k, v in injected[len(kept) :]} == expected


async def test_client_address_is_the_trusted_one_from_x_forwarded_for(traced: Traced) -> None:
    request = make_request([])
    request.info.client_address = "203.0.113.10"  # what the connection manager found trusted
    await run(traced, traced.filter(), request)
    (server,) = traced.spans(trace.SpanKind.SERVER)
    assert (server.attributes or {})[names.CLIENT_ADDRESS] == "203.0.113.10"
