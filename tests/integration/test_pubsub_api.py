"""Dapr's pub/sub API on in-process sidecars: publish, envelopes, routes, statuses, DLQ, scopes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from opentelemetry import trace

from proxy.app import build
from proxy.server import Bound, serve
from tests.integration.sidecars import generated, sidecar, sidecar_args
from tests.integration.test_state_api import call, component, error, resources
from tests.integration.test_tracing import Spans
from tests.pubsub.apps import Received, SubscriberApp, subscriber_app
from tests.state.stores import wait_until

PUBSUB = "pubsub"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def memory_resources(tmp_path: Path, *extra: str, **metadata: str) -> tuple[str, str]:
    return resources(
        tmp_path / "resources", component(PUBSUB, "pubsub.in-memory", **metadata), *extra
    )


def route(topic: str, path: str, **more: object) -> dict[str, object]:
    return {"pubsubname": PUBSUB, "topic": topic, "route": path, **more}


async def test_a_published_event_reaches_the_app_in_dapr_s_envelope(tmp_path: Path) -> None:
    app = SubscriberApp([route("orders", "/orders")])
    async with subscriber_app(app) as app_port:
        flags = memory_resources(tmp_path)
        async with sidecar("checkout", app_port, tmp_path, *flags) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            reply = await call(
                port,
                "POST",
                "/v1.0/publish/pubsub/orders?metadata.cloudevent.subject=s1",
                b'{"orderId": 7, "price": 1.10}',
                headers=[("content-type", "application/json"), ("traceparent", TRACEPARENT)],
            )
            assert reply.status == 204
            await app.wait_for(lambda: len(app.on("/orders")) == 1)
    (got,) = app.on("/orders")
    assert got.headers["content-type"] == "application/cloudevents+json"
    assert got.headers["pubsubname"] == PUBSUB
    event = got.event
    assert event["data"] == {"orderId": 7, "price": 1.10}
    assert b'"price": 1.10' in got.body, "the JSON data is kept byte for byte"
    assert event["source"] == "checkout"
    assert event["type"] == "com.dapr.event.sent"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["topic"] == "orders"
    assert event["pubsubname"] == PUBSUB
    assert event["subject"] == "s1"
    assert isinstance(event["id"], str)
    assert len(event["id"]) == 36
    assert isinstance(event["time"], str)
    assert event["time"].endswith("Z")
    assert event["traceid"] == event["traceparent"]
    assert str(event["traceparent"]).split("-")[1] == TRACEPARENT.split("-")[1]
    # The delivery carries a new span of the same trace.
    delivered = got.headers["traceparent"].split("-")
    assert delivered[1] == TRACEPARENT.split("-")[1]
    assert delivered[2] != str(event["traceparent"]).split("-")[2]


async def test_content_types_shape_data(tmp_path: Path) -> None:
    app = SubscriberApp([route("t", "/t")])
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            sends = [
                (b"plain words", "text/plain"),
                (b"\x00\xffbinary", "application/octet-stream"),
                (b"{not json", "application/json"),
                (b'{"id":"mine","specversion":"1.0","data":{"x":1},"custom":"kept"}',
                 "application/cloudevents+json"),
            ]  # fmt: skip
            for body, content_type in sends:
                reply = await call(
                    port, "POST", "/v1.0/publish/pubsub/t", body, [("content-type", content_type)]
                )
                assert reply.status == 204
            await app.wait_for(lambda: len(app.received) == len(sends))
    events = {str(r.event.get("datacontenttype")): r.event for r in app.received}
    assert events["text/plain"]["data"] == "plain words"
    assert base64.b64decode(str(events["application/octet-stream"]["data_base64"])) == (
        b"\x00\xffbinary"
    )
    assert "data" not in events["application/octet-stream"]
    assert events["application/json"]["data"] == "{not json"
    (user,) = [r.event for r in app.received if r.event.get("id") == "mine"]
    assert user["custom"] == "kept"
    assert user["data"] == {"x": 1}
    assert user["topic"] == "t"
    assert user["source"] == "a"


async def test_routing_rules_choose_the_path(tmp_path: Path) -> None:
    rules = {
        "rules": [
            {"match": 'event.type == "widget"', "path": "/widgets"},
            {"match": "event.data.size > 10", "path": "/big"},
        ],
        "default": "/other",
    }
    app = SubscriberApp([{"pubsubname": PUBSUB, "topic": "items", "routes": rules}])
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            publish = "/v1.0/publish/pubsub/items"
            widget = f"{publish}?metadata.cloudevent.type=widget"
            json_type = [("content-type", "application/json")]
            await call(port, "POST", widget, {"size": 1}, json_type)
            await call(port, "POST", publish, {"size": 11}, json_type)
            await call(port, "POST", publish, {"size": 2}, json_type)
            await app.wait_for(lambda: len(app.received) == 3)
    assert sorted(r.path for r in app.received) == ["/big", "/other", "/widgets"]


def _status(value: str) -> object:
    def answer(received: Received) -> tuple[int, object]:
        return 200, {"status": value}

    return answer


async def test_retry_redelivers_until_success(tmp_path: Path) -> None:
    attempts: list[Received] = []

    def answer(received: Received) -> tuple[int, object]:
        attempts.append(received)
        return (200, {"status": "RETRY"}) if len(attempts) < 3 else (200, {"status": "SUCCESS"})

    app = SubscriberApp([route("jobs", "/jobs")], answer)
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            await call(running.port("dapr-http"), "POST", "/v1.0/publish/pubsub/jobs", {"n": 1})
            await app.wait_for(lambda: len(attempts) == 3)
            render = running.app.sidecar.metrics.render
            with trio.fail_after(10):  # the outcome is recorded once the app's answer is read
                await wait_until(lambda: 'process_status="success"' in render())
            metrics = render()
    assert len({r.event["id"] for r in attempts}) == 1
    assert 'process_status="retry"' in metrics
    assert 'process_status="success"' in metrics


async def test_drop_and_404_go_to_the_dead_letter_topic(tmp_path: Path) -> None:
    def answer(received: Received) -> tuple[int, object]:
        if received.path == "/drop":
            return 200, {"status": "DROP"}
        if received.path == "/gone":
            return 404, {"error": "no such route"}
        return 200, None

    subscriptions = [
        route("a", "/drop", deadLetterTopic="poison"),
        route("b", "/gone", deadLetterTopic="poison"),
        route("poison", "/poison"),
    ]
    app = SubscriberApp(subscriptions, answer)
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            await call(port, "POST", "/v1.0/publish/pubsub/a", {"n": "a"})
            await call(port, "POST", "/v1.0/publish/pubsub/b", {"n": "b"})
            await app.wait_for(lambda: len(app.on("/poison")) == 2)
    assert sorted(str(r.event["topic"]) for r in app.on("/poison")) == ["a", "b"]
    assert len(app.on("/drop")) == 1
    assert len(app.on("/gone")) == 1


async def test_exhausted_resiliency_retries_dead_letter_the_message(tmp_path: Path) -> None:
    resiliency = (
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n"
        "  policies:\n    retries:\n"
        "      twice: {policy: constant, duration: 10ms, maxRetries: 2}\n"
        "  targets:\n    components:\n      pubsub: {inbound: {retry: twice}}\n"
    )

    def answer(received: Received) -> tuple[int, object]:
        return (500, {"oops": True}) if received.path == "/fails" else (200, None)

    subscriptions = [route("work", "/fails", deadLetterTopic="dead"), route("dead", "/dead")]
    app = SubscriberApp(subscriptions, answer)
    async with subscriber_app(app) as app_port:
        flags = memory_resources(tmp_path, resiliency)
        async with sidecar("a", app_port, tmp_path, *flags) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            await call(running.port("dapr-http"), "POST", "/v1.0/publish/pubsub/work", {"n": 1})
            await app.wait_for(lambda: len(app.on("/dead")) == 1)
    assert len(app.on("/fails")) == 3  # the first attempt and two retries


async def test_expired_messages_are_not_delivered(tmp_path: Path) -> None:
    failing_until_expired: list[Received] = []

    def answer(received: Received) -> tuple[int, object]:
        if received.path == "/short":
            failing_until_expired.append(received)
            return 500, None
        return 200, None

    subscriptions = [route("short", "/short", deadLetterTopic="late"), route("late", "/late")]
    app = SubscriberApp(subscriptions, answer)
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            target = "/v1.0/publish/pubsub/short?metadata.ttlInSeconds=1"
            assert (await call(port, "POST", target, {"n": 1})).status == 204
            await app.wait_for(lambda: len(app.on("/late")) == 1)
    (dead,) = app.on("/late")
    assert "expiration" in dead.event
    assert failing_until_expired, "the app saw it before it expired"


async def test_raw_payload_both_ways(tmp_path: Path) -> None:
    app = SubscriberApp([route("raw", "/raw", metadata={"rawPayload": "true"})])
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            target = "/v1.0/publish/pubsub/raw?metadata.rawPayload=true"
            assert (await call(port, "POST", target, b"\x01raw bytes")).status == 204
            bad = await call(port, "POST", "/v1.0/publish/pubsub/raw?metadata.rawPayload=maybe")
            await app.wait_for(lambda: len(app.received) == 1)
    event = app.received[0].event
    assert base64.b64decode(str(event["data_base64"])) == b"\x01raw bytes"
    assert event["source"] == "Dapr"
    assert event["datacontenttype"] == "application/octet-stream"
    assert error(bad) == (400, "ERR_PUBSUB_REQUEST_METADATA")


async def test_publish_errors_are_dapr_s(tmp_path: Path) -> None:
    flags = memory_resources(
        tmp_path, publishingScopes="a=allowed", protectedTopics="secret", allowedTopics=""
    )
    async with sidecar("a", None, tmp_path, *flags) as running:
        port = running.port("dapr-http")
        unknown = await call(port, "POST", "/v1.0/publish/nope/t", {"n": 1})
        no_topic = await call(port, "POST", "/v1.0/publish/pubsub/", {"n": 1})
        forbidden = await call(port, "POST", "/v1.0/publish/pubsub/other", {"n": 1})
        allowed = await call(port, "POST", "/v1.0/publish/pubsub/allowed", {"n": 1})
        wrong_method = await call(port, "GET", "/v1.0/publish/pubsub/allowed")
    assert error(unknown) == (404, "ERR_PUBSUB_NOT_FOUND")
    assert error(no_topic)[1] in ("ERR_TOPIC_NAME_EMPTY", "ERR_PUBSUB_NOT_FOUND")
    assert error(forbidden) == (403, "ERR_PUBSUB_FORBIDDEN")
    assert json.loads(forbidden.body)["message"] == "topic other is not allowed for app id a"
    assert allowed.status == 204
    assert wrong_method.status == 405


async def test_bulk_publish(tmp_path: Path) -> None:
    app = SubscriberApp([route("bulk", "/bulk")])
    entries = [
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
        {"entryId": "2", "event": "text", "contentType": "text/plain"},
        {"entryId": "3", "event": base64.b64encode(b"\x00").decode(),
         "contentType": "application/octet-stream"},
    ]  # fmt: skip
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            ok = await call(port, "POST", "/v1.0-alpha1/publish/bulk/pubsub/bulk", entries)
            duplicate = await call(
                port, "POST", "/v1.0-alpha1/publish/bulk/pubsub/bulk", [entries[0], entries[0]]
            )
            await app.wait_for(lambda: len(app.received) == 3)
    assert ok.status == 204
    assert error(duplicate) == (400, "ERR_PUBSUB_EVENTS_SER")
    data = sorted(json.dumps(r.event.get("data", r.event.get("data_base64"))) for r in app.received)
    assert data == sorted(['{"n": 1}', '"text"', '"AA=="'])


async def test_declarative_subscription_and_metadata(tmp_path: Path) -> None:
    declarative = (
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\n"
        "spec:\n  pubsubname: pubsub\n  topic: decl\n  routes:\n    default: /decl\n"
    )
    app = SubscriberApp(None)  # /dapr/subscribe answers 404
    async with subscriber_app(app) as app_port:
        flags = memory_resources(tmp_path, declarative)
        async with sidecar("a", app_port, tmp_path, *flags) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            await call(port, "POST", "/v1.0/publish/pubsub/decl", {"n": 1})
            await app.wait_for(lambda: len(app.on("/decl")) == 1)
            metadata = json.loads((await call(port, "GET", "/v1.0/metadata")).body)
    assert metadata["subscriptions"] == [
        {
            "pubsubname": PUBSUB,
            "topic": "decl",
            "metadata": {},
            "rules": [{"match": "", "path": "/decl"}],
            "deadLetterTopic": "",
            "type": "DECLARATIVE",
        }
    ]
    (listed,) = [c for c in metadata["components"] if c["name"] == PUBSUB]
    assert listed["type"] == "pubsub.in-memory"
    assert listed["capabilities"] == []


@asynccontextmanager
async def traced_sidecar(tmp_path: Path, spans: Spans, app: SubscriberApp) -> AsyncIterator[int]:
    """A sidecar sampling every trace into `spans`, its subscriptions running; its HTTP port."""
    tracing = tmp_path / "tracing.yaml"
    tracing.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: t}\n"
        "spec:\n  tracing:\n    samplingRate: '1'\n"
        "    zipkin: {endpointAddress: 'http://127.0.0.1:9/api/v2/spans'}\n"
    )
    async with subscriber_app(app) as app_port:
        argv = sidecar_args(
            "a", app_port, tmp_path, *memory_resources(tmp_path), "--config", str(tracing)
        )
        built = build(generated(argv), telemetry=spans.telemetry)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            bound: Bound = await nursery.start(serve, built, shutdown)
            assert built.sidecar is not None
            await built.sidecar.subscriber.running.wait()
            try:
                yield bound.addresses["dapr-http"][1]
            finally:
                shutdown.set()


async def test_delivery_span_is_a_child_of_the_publish_span(tmp_path: Path) -> None:
    spans = Spans()
    app = SubscriberApp([route("traced", "/traced")])
    async with traced_sidecar(tmp_path, spans, app) as port:
        await call(port, "POST", "/v1.0/publish/pubsub/traced", {"n": 1})
        await app.wait_for(lambda: len(app.received) == 1)
        finished = await spans.wait_for(2)
    publish = next(s for s in finished if s.kind == trace.SpanKind.SERVER)
    delivery = next(s for s in finished if s.name == "pubsub/traced")
    assert delivery.parent is not None
    assert publish.context is not None
    assert delivery.parent.span_id == publish.context.span_id
    assert delivery.context is not None
    assert delivery.context.trace_id == publish.context.trace_id
    assert (delivery.attributes or {})["messaging.destination.name"] == "traced"
    sent = app.received[0].headers["traceparent"].split("-")
    assert int(sent[2], 16) == delivery.context.span_id


async def test_each_bulk_entry_is_published_in_its_own_producer_span(tmp_path: Path) -> None:
    spans = Spans()
    app = SubscriberApp([route("many", "/many")])
    entries = [{"entryId": str(n), "event": {"n": n}} for n in range(2)]
    async with traced_sidecar(tmp_path, spans, app) as port:
        reply = await call(port, "POST", "/v1.0-alpha1/publish/bulk/pubsub/many", entries)
        await app.wait_for(lambda: len(app.received) == 2)
        finished = await spans.wait_for(5)  # the call, two producers, two deliveries
    assert reply.status == 204
    (server,) = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    producers = [s for s in finished if s.kind == trace.SpanKind.PRODUCER]
    deliveries = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    assert server.context is not None
    assert len(producers) == len(deliveries) == 2
    assert all(
        p.parent is not None and p.parent.span_id == server.context.span_id for p in producers
    )
    producer_ids = {p.context.span_id for p in producers if p.context is not None}
    assert {d.parent.span_id for d in deliveries if d.parent is not None} == producer_ids
    carried = {int(str(r.event["traceparent"]).split("-")[2], 16) for r in app.received}
    assert carried == producer_ids


async def test_bulk_subscribe_gathers_entries_and_reads_each_status(tmp_path: Path) -> None:
    def answer(received: Received) -> tuple[int, object]:
        if received.path != "/many":
            return 200, None
        entries = json.loads(received.body)["entries"]
        statuses = []
        for entry in entries:
            n = entry["event"]["data"]["n"]
            status = {0: "SUCCESS", 1: "DROP"}.get(n % 3)  # n % 3 == 2: no status → RETRY
            if status is not None:
                statuses.append({"entryId": entry["entryId"], "status": status})
        return 200, {"statuses": statuses}

    bulk = {"enabled": True, "maxMessagesCount": 10, "maxAwaitDurationMs": 200}
    subscriptions = [
        route("many", "/many", bulkSubscribe=bulk, deadLetterTopic="dlq"),
        route("dlq", "/dlq"),
    ]
    app = SubscriberApp(subscriptions, answer)
    async with subscriber_app(app) as app_port:
        async with sidecar("a", app_port, tmp_path, *memory_resources(tmp_path)) as running:
            assert running.app.sidecar is not None
            await running.app.sidecar.subscriber.running.wait()
            port = running.port("dapr-http")
            json_type = [("content-type", "application/json")]
            async with trio.open_nursery() as nursery:
                for n in range(3):
                    body = json.dumps({"n": n}).encode()
                    target = "/v1.0/publish/pubsub/many"
                    nursery.start_soon(call, port, "POST", target, body, json_type)
            # n=1 is dropped, n=2 has no status (RETRY, and no retry policy): both end in the
            # dead-letter topic; n=0 succeeded.
            await app.wait_for(lambda: len(app.on("/dlq")) == 2)
    first = app.on("/many")[0]
    assert first.headers["content-type"] == "application/json"
    batch = json.loads(first.body)
    assert batch["type"] == "com.dapr.event.sent.bulk"
    assert batch["topic"] == "many"
    assert batch["pubsubname"] == PUBSUB
    assert all(e["contentType"] == "application/cloudevents+json" for e in batch["entries"])
    delivered = [
        e["event"]["data"]["n"] for r in app.on("/many") for e in json.loads(r.body)["entries"]
    ]
    assert sorted(delivered) == [0, 1, 2]
    assert sorted(r.event["data"]["n"] for r in app.on("/dlq")) == [1, 2]
