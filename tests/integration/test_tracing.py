"""Tracing over real sockets: client → meshwire A → meshwire B → backend, one trace end to end."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import msgspec
import pytest
import trio
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config import schema
from exporters import names
from exporters.telemetry import Telemetry
from exporters.tracing_setup import sdk_tracing
from filters.registry import BuildContext, build_filter, build_terminal
from proxy.app import App, build
from proxy.http.model import Headers, Request, Response
from proxy.server import Bound, serve
from proxy.upstream.manager import ClusterManager
from tests.integration.harness import H1Client, backend, one_route_config, raw_backend

SERVER, CLIENT = trace.SpanKind.SERVER, trace.SpanKind.CLIENT


def build_traced(config: schema.Config, telemetry: Telemetry) -> App:
    """`build(config, telemetry=...)` once the app accepts it; until then, the same by hand."""
    if "telemetry" in inspect.signature(build).parameters:
        return build(config, telemetry=telemetry)  # type: ignore[call-arg]
    from filters.connection.request_id import ConnectionManagerFilter
    from proxy.chain import Filter, build_chain
    from proxy.http.rescue import RescueFilter
    from proxy.routing import RouteTable

    app = build(config)
    clusters = ClusterManager(config.clusters, app.stats, telemetry)
    listeners = []
    for spec in app.listeners:
        lc = spec.config
        ctx = BuildContext(RouteTable.build(lc.routes), clusters, telemetry)
        chain: list[Filter] = [
            RescueFilter(),
            ConnectionManagerFilter(
                generate_request_id=lc.generate_request_id,
                use_remote_address=lc.use_remote_address,
            ),
            *(build_filter(f, ctx) for f in lc.filters[:-1]),
        ]
        handler = build_chain(chain, build_terminal(lc.filters[-1], ctx))
        listeners.append(dataclasses.replace(spec, handler=handler))
    return dataclasses.replace(app, clusters=clusters, listeners=listeners)


def traced_config(upstream_port: int, protocol: str = "http1") -> schema.Config:
    config = one_route_config(0, upstream_port, upstream_protocol=protocol)
    listener = msgspec.structs.replace(
        config.listeners[0],
        filters=[
            schema.TracingFilter(propagators=["tracecontext", "b3multi"]),
            schema.RouterFilter(),
        ],
    )
    return msgspec.structs.replace(config, admin=None, listeners=[listener])


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[int]:
    """Serve `app` until the block ends; yields the ingress port."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(serve, app, shutdown)
        try:
            yield bound.addresses["ingress"][1]
        finally:
            shutdown.set()


class Spans(SimpleSpanProcessor):
    """Finished spans in memory; `wait_for` wakes on each one (spans end on the trio thread)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        super().__init__(self.exporter)
        self.changed = trio.Event()
        provider, spans = sdk_tracing(Resource.create({}), [self])
        self.telemetry = Telemetry(provider, NoOpMeterProvider(), spans=spans)

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(span)
        self.changed.set()

    async def wait_for(self, count: int) -> list[ReadableSpan]:
        with trio.fail_after(5):
            while len(self.exporter.get_finished_spans()) < count:
                self.changed = trio.Event()
                await self.changed.wait()
        spans = list(self.exporter.get_finished_spans())
        assert len(spans) == count
        return spans


def one(spans: list[ReadableSpan], kind: trace.SpanKind, port: int) -> ReadableSpan:
    """The span of `kind` whose server.port is `port` (identifies the hop)."""
    (found,) = [
        s for s in spans if s.kind == kind and (s.attributes or {}).get(names.SERVER_PORT) == port
    ]
    return found


def started(span: ReadableSpan) -> int:
    return span.start_time or 0


def ids(span: ReadableSpan) -> tuple[int, int, int | None]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id, span.parent and span.parent.span_id


@pytest.mark.parametrize("protocol", ["http1", "h2c"])
async def test_one_trace_across_two_meshwires_and_the_backend(protocol: str) -> None:
    spans = Spans()
    seen: list[Headers] = []

    async def app_handler(request: Request) -> Response:
        seen.append(list(request.headers))
        return Response.text(200, "hello")

    async with backend(app_handler) as backend_port:
        app_b = build_traced(traced_config(backend_port, protocol), spans.telemetry)
        async with serving(app_b) as port_b:
            app_a = build_traced(traced_config(port_b, protocol), spans.telemetry)
            async with serving(app_a) as port_a:
                async with H1Client.connect(port_a) as client:
                    reply = await client.request("GET", "/orders?id=7")
                assert (reply.status, reply.body) == (200, b"hello")
                found = await spans.wait_for(4)

    # The SERVER spans see the authority the client sent ("test"), so tell hops apart by kind
    # and, for CLIENT spans, by the port they called.
    server_a, server_b = sorted((s for s in found if s.kind == SERVER), key=started)
    client_a = one(found, CLIENT, port_b)
    client_b = one(found, CLIENT, backend_port)
    trace_ids = {ids(s)[0] for s in found}
    assert len(trace_ids) == 1
    assert server_a.parent is None
    assert ids(client_a)[2] == ids(server_a)[1]
    assert ids(server_b)[2] == ids(client_a)[1]
    assert server_b.parent is not None
    assert server_b.parent.is_remote
    assert ids(client_b)[2] == ids(server_b)[1]
    assert server_a.name == server_b.name == "GET /*"
    assert client_a.name == client_b.name == "GET"

    (headers,) = seen
    (traceparent,) = [v for k, v in headers if k == b"traceparent"]
    trace_id, span_id = ids(client_b)[:2]
    version, sent_trace, sent_parent, flags = traceparent.decode().split("-")
    assert (version, sent_trace, sent_parent) == ("00", f"{trace_id:032x}", f"{span_id:016x}")
    assert int(flags, 16) & 1  # sampled (0x02, the level-2 random flag, may be set too)
    assert [v for k, v in headers if k == b"x-b3-spanid"] == [f"{span_id:016x}".encode()]


async def test_a_stale_keep_alive_retry_shows_two_client_spans() -> None:
    spans = Spans()
    traceparents: list[bytes] = []

    async def answer_once_then_drop(stream: trio.SocketStream) -> None:
        """Answer a connection's first request; at its next, hang up without answering (the
        close crossed the request on the wire, so the pool could not see it coming)."""
        conn = h11.Connection(h11.SERVER)
        answered = False
        while True:
            seen: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if not (data := await stream.receive_some(65536)):
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    seen = [v for k, v in event.headers if k == b"traceparent"]
                elif isinstance(event, h11.EndOfMessage):
                    break
            if answered:
                await stream.aclose()
                return
            traceparents.extend(seen)
            headers = [("content-length", "2")]
            data = conn.send(h11.Response(status_code=200, headers=headers))
            await stream.send_all(
                data + conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage())
            )
            answered = True
            conn.start_next_cycle()

    async with raw_backend(answer_once_then_drop) as backend_port:
        app = build_traced(traced_config(backend_port), spans.telemetry)
        async with serving(app) as port:
            async with H1Client.connect(port) as client:
                assert (await client.request("GET", "/first")).status == 200
                await spans.wait_for(2)
                spans.exporter.clear()
                traceparents.clear()
                assert (await client.request("GET", "/second")).status == 200
            found = await spans.wait_for(3)

    (server,) = [s for s in found if s.kind == SERVER]
    first, second = sorted((s for s in found if s.kind == CLIENT), key=started)
    assert ids(first)[2] == ids(second)[2] == ids(server)[1]
    assert (first.attributes or {})[names.ERROR_TYPE] == "RetryableReset"
    assert first.status.status_code == trace.StatusCode.ERROR
    assert names.HTTP_RESEND_COUNT not in (first.attributes or {})
    assert (second.attributes or {})[names.HTTP_RESEND_COUNT] == 1
    assert (second.attributes or {})[names.HTTP_RESPONSE_STATUS_CODE] == 200
    # Only the retry reached a live backend, carrying its own span id.
    assert [tp.split(b"-")[2] for tp in traceparents] == [f"{ids(second)[1]:016x}".encode()]
