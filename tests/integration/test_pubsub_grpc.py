"""Dapr's publish gRPC API with the official SDK, and pub/sub to gRPC apps (AppCallback)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import trio
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import BulkPublishEntry
from dapr.clients.grpc.interceptors import DaprClientInterceptor
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc, dapr_pb2_grpc
from dapr.proto.runtime.v1.pubsub_pb2 import BulkPublishRequest, BulkPublishRequestEntry
from google.protobuf import empty_pb2, json_format

from filters.pubsub.delivery import Delivery, DeliveryFailed, Outcome
from filters.pubsub.grpc_app import GrpcAppChannel, event_data, from_proto, topic_event_request
from proxy.grpc.status import StatusCode
from proxy.http.model import EmptyBody, Request, Response
from tests.integration.sidecars import sidecar
from tests.integration.test_process import free_port
from tests.integration.test_pubsub_api import PUBSUB, TRACEPARENT, memory_resources, route
from tests.integration.test_sidecar_grpc import raw_metadata
from tests.integration.test_sidecar_process import get, sidecar_process
from tests.integration.test_state_api import call
from tests.pubsub.apps import SubscriberApp, subscriber_app
from tests.state.stores import wait_until

T = TypeVar("T")
DEADLINE = 20
SUCCESS, RETRY, DROP = 0, 1, 2  # TopicEventResponse.TopicEventResponseStatus
TRACE_ID = TRACEPARENT.split("-")[1]


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", str(DEADLINE))
    return monkeypatch


async def with_sdk(
    env: pytest.MonkeyPatch, http_port: int, grpc_port: int, work: Callable[[DaprClient], T]
) -> T:
    """`work(client)` in a worker thread, with a DaprClient that sends our traceparent."""
    env.setenv("DAPR_HTTP_PORT", str(http_port))
    tracing = DaprClientInterceptor([("traceparent", TRACEPARENT)])

    def in_thread() -> T:
        with DaprClient(address=f"127.0.0.1:{grpc_port}", interceptors=[tracing]) as client:
            return work(client)

    with trio.fail_after(DEADLINE):
        return await trio.to_thread.run_sync(in_thread)


Failure = tuple[grpc.StatusCode, str, str]  # code, message, the SDK's error code (reason)


def failure(call: Callable[[], object]) -> Failure:
    try:
        call()
    except DaprGrpcError as err:
        got: Failure = (err.code(), err.details() or "", err.error_code())  # type: ignore[no-untyped-call]
        return got
    raise AssertionError("the call should have failed")


# --- the SDK against a sidecar process, an HTTP subscriber ------------------------------------


async def until_subscribed(http_port: int, count: int) -> None:
    """Polls the metadata API: a sidecar process shows its subscriptions nowhere else."""
    with trio.fail_after(DEADLINE):
        while True:
            metadata = json.loads((await get(http_port, "/v1.0/metadata")).body)
            if len(metadata.get("subscriptions", [])) >= count:
                return
            await trio.sleep(0.05)


def publish_three(d: DaprClient) -> dict[str, Failure]:
    d.publish_event(
        PUBSUB, "orders", '{"orderId": 7, "price": 1.10}', data_content_type="application/json"
    )
    d.publish_event(
        PUBSUB,
        "orders",
        "plain words",
        publish_metadata={"ttlInSeconds": "60", "cloudevent.subject": "s1"},
    )
    d.publish_event(PUBSUB, "raw", b"\x00raw bytes", publish_metadata={"rawPayload": "true"})
    return {
        "unknown": failure(lambda: d.publish_event("nope", "orders", b"x")),
        "bad_metadata": failure(
            lambda: d.publish_event(PUBSUB, "orders", b"x", publish_metadata={"rawPayload": "?"})
        ),
        "no_topic": failure(lambda: d.publish_event(PUBSUB, "", b"x")),
    }


async def test_sdk_publish_event_reaches_an_http_app_through_a_sidecar_process(
    tmp_path: Path, sdk_env: pytest.MonkeyPatch
) -> None:
    raw = route("raw", "/raw", metadata={"rawPayload": "true"})
    app = SubscriberApp([route("orders", "/orders"), raw])
    http, grpc_port = free_port(), free_port()
    flags = [*memory_resources(tmp_path), "--dapr-grpc-port", str(grpc_port)]
    async with subscriber_app(app) as app_port:
        async with sidecar_process("checkout", tmp_path, http, "--app-port", str(app_port), *flags):
            await until_subscribed(http, 2)
            errors = await with_sdk(sdk_env, http, grpc_port, publish_three)
            await app.wait_for(lambda: len(app.on("/orders")) == 2 and len(app.on("/raw")) == 1)
    by_type = {r.event["datacontenttype"]: r for r in app.on("/orders")}
    json_delivery = by_type["application/json"]
    assert b'"price": 1.10' in json_delivery.body, "the JSON data is kept byte for byte"
    event = json_delivery.event
    assert event["data"] == {"orderId": 7, "price": 1.10}
    assert (event["source"], event["type"], event["specversion"]) == (
        "checkout",
        "com.dapr.event.sent",
        "1.0",
    )
    assert (event["topic"], event["pubsubname"]) == ("orders", PUBSUB)
    assert isinstance(event["id"], str)
    assert len(event["id"]) == 36
    assert str(event["time"]).endswith("Z")
    assert event["traceid"] == event["traceparent"]
    assert str(event["traceparent"]).split("-")[1] == TRACE_ID
    assert json_delivery.headers["traceparent"].split("-")[1] == TRACE_ID
    assert json_delivery.headers["pubsubname"] == PUBSUB

    text = by_type["text/plain"].event  # no data_content_type: Dapr's default
    assert text["data"] == "plain words"
    assert text["subject"] == "s1"
    assert str(text["expiration"]) > str(text["time"])  # in-memory has no native TTL

    (raw_delivery,) = app.on("/raw")
    assert raw_delivery.event["data_base64"] == base64.b64encode(b"\x00raw bytes").decode()
    assert raw_delivery.event["datacontenttype"] == "application/octet-stream"

    code, message, reason = errors["unknown"]
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DAPR_PUBSUB_NOT_FOUND")
    assert "nope" in message
    assert errors["bad_metadata"][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert errors["no_topic"][2] == "DAPR_PUBSUB_TOPIC_NAME_EMPTY"


# --- a gRPC app (--app-protocol grpc) ---------------------------------------------------------

Event = tuple[appcallback_pb2.TopicEventRequest, dict[str, str]]


def subscription(topic: str, **fields: Any) -> appcallback_pb2.TopicSubscription:
    return appcallback_pb2.TopicSubscription(pubsub_name=PUBSUB, topic=topic, **fields)


SUBSCRIPTIONS = [
    subscription(
        "orders",
        routes=appcallback_pb2.TopicRoutes(
            rules=[appcallback_pb2.TopicRule(match='event.type == "widget"', path="widgets")],
            default="orders",
        ),
    ),
    subscription("flaky"),  # no routes: OnTopicEvent with path ""
    subscription(
        "poison", routes=appcallback_pb2.TopicRoutes(default="poison"), dead_letter_topic="dlq"
    ),
    subscription("dlq", routes=appcallback_pb2.TopicRoutes(default="dead")),
    subscription(
        "batched",
        routes=appcallback_pb2.TopicRoutes(default="batched"),
        bulk_subscribe=appcallback_pb2.BulkSubscribeConfig(
            enabled=True, max_messages_count=10, max_await_duration_ms=200
        ),
    ),
]


@dataclass
class GrpcSubscriber:
    """A grpcio AppCallback: SUCCESS, except RETRY for the first delivery of each `flaky`
    event and DROP for `poison`."""

    port: int = 0
    events: list[Event] = field(default_factory=list)
    batches: list[appcallback_pb2.TopicEventBulkRequest] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, request: appcallback_pb2.TopicEventRequest, metadata: dict[str, str]) -> int:
        with self.changed:
            seen = [e for e, _ in self.events if e.id == request.id]
            self.events.append((request, metadata))
            self.changed.notify_all()
        if request.topic == "poison":
            return DROP
        return RETRY if request.topic == "flaky" and not seen else SUCCESS

    def record_batch(
        self, request: appcallback_pb2.TopicEventBulkRequest
    ) -> appcallback_pb2.TopicEventBulkResponse:
        """SUCCESS for every entry but the one whose data is `no`, which is left unanswered
        (so it is retried, and then dead-lettered: there is no retry policy)."""
        with self.changed:
            self.batches.append(request)
            self.changed.notify_all()
        statuses = [
            appcallback_pb2.TopicEventBulkResponseEntry(entry_id=e.entry_id, status=SUCCESS)  # type: ignore[arg-type]
            for e in request.entries
            if e.cloud_event.data != b"no"
        ]
        return appcallback_pb2.TopicEventBulkResponse(statuses=statuses)

    def on(self, topic: str) -> list[appcallback_pb2.TopicEventRequest]:
        return [e for e, _ in self.events if e.topic == topic]

    def _wait(self, condition: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout=DEADLINE)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(DEADLINE):
            await trio.to_thread.run_sync(partial(self._wait, condition), abandon_on_cancel=True)
        assert condition()


class _Callback(appcallback_pb2_grpc.AppCallbackServicer):
    def __init__(self, app: GrpcSubscriber) -> None:
        self.app = app

    def ListTopicSubscriptions(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> appcallback_pb2.ListTopicSubscriptionsResponse:
        return appcallback_pb2.ListTopicSubscriptionsResponse(subscriptions=SUBSCRIPTIONS)

    def OnTopicEvent(
        self, request: appcallback_pb2.TopicEventRequest, context: grpc.ServicerContext
    ) -> appcallback_pb2.TopicEventResponse:
        status = self.app.record(request, dict(context.invocation_metadata()))
        return appcallback_pb2.TopicEventResponse(status=status)  # type: ignore[arg-type]

    def OnBulkTopicEvent(
        self, request: appcallback_pb2.TopicEventBulkRequest, context: grpc.ServicerContext
    ) -> appcallback_pb2.TopicEventBulkResponse:
        return self.app.record_batch(request)


@pytest.fixture
def grpc_subscriber() -> Iterator[GrpcSubscriber]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    app = GrpcSubscriber()
    app.port = server.add_insecure_port("127.0.0.1:0")
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(_Callback(app), server)  # type: ignore[no-untyped-call]
    server.start()
    try:
        yield app
    finally:
        server.stop(grace=None).wait()


def publish_four(d: DaprClient) -> None:
    d.publish_event(PUBSUB, "orders", '{"n": 1, "a": [true]}', data_content_type="application/json")
    d.publish_event(PUBSUB, "orders", "w", publish_metadata={"cloudevent.type": "widget"})
    d.publish_event(PUBSUB, "flaky", "try again")
    d.publish_event(PUBSUB, "poison", b"\x01\x02", data_content_type="application/octet-stream")


def bulk(d: DaprClient) -> tuple[list[object], Failure]:
    entries = [BulkPublishEntry("x", entry_id="1"), BulkPublishEntry("y", entry_id="2")]
    published = d.publish_events(PUBSUB, "orders", entries, data_content_type="text/plain")
    twice = [BulkPublishEntry("a", entry_id="1"), BulkPublishEntry("b", entry_id="1")]
    duplicate = failure(lambda: d.publish_events(PUBSUB, "orders", twice))
    return list(published.failed_entries), duplicate


def alpha1_duplicate(grpc_port: int) -> grpc.StatusCode:
    """BulkPublishEventAlpha1, which the SDK only falls back to, called directly."""
    entry = BulkPublishRequestEntry(entry_id="same", event=b"1", content_type="text/plain")
    request = BulkPublishRequest(pubsub_name=PUBSUB, topic="orders", entries=[entry, entry])
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        try:
            dapr_pb2_grpc.DaprStub(channel).BulkPublishEventAlpha1(request, timeout=DEADLINE)  # type: ignore[no-untyped-call]
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code
    raise AssertionError("the call should have failed")


async def test_a_grpc_app_subscribes_and_answers_success_retry_and_drop(
    tmp_path: Path, grpc_subscriber: GrpcSubscriber, sdk_env: pytest.MonkeyPatch
) -> None:
    app = grpc_subscriber
    flags = ["--app-protocol", "grpc", *memory_resources(tmp_path)]
    async with sidecar("billing", app.port, tmp_path, *flags) as running:
        assert running.app.sidecar is not None
        await running.app.sidecar.subscriber.running.wait()
        ports = running.port("dapr-http"), running.port("dapr-grpc")
        await with_sdk(sdk_env, *ports, publish_four)
        await app.wait_for(
            lambda: (
                len(app.on("orders")) == 2 and len(app.on("flaky")) == 2 and len(app.on("dlq")) == 1
            )
        )
        failed, duplicate = await with_sdk(sdk_env, *ports, bulk)
        await app.wait_for(lambda: len(app.on("orders")) == 4)
        alpha1 = await trio.to_thread.run_sync(alpha1_duplicate, ports[1])
        metadata_reply = await trio.to_thread.run_sync(raw_metadata, ports[1])

    listed = {s.topic: s for s in metadata_reply.subscriptions}
    assert listed["orders"].pubsub_name == PUBSUB
    assert listed["orders"].type == 2  # PROGRAMMATIC: from ListTopicSubscriptions
    brokers = [c for c in metadata_reply.registered_components if c.type.startswith("pubsub.")]
    assert [(c.name, c.type) for c in brokers] == [(PUBSUB, "pubsub.in-memory")]
    orders = [(e, metadata) for e, metadata in app.events if e.topic == "orders"]
    ((order, metadata),) = [o for o in orders if o[0].data_content_type == "application/json"]
    assert (order.source, order.type, order.spec_version) == (
        "billing",
        "com.dapr.event.sent",
        "1.0",
    )
    assert len(order.id) == 36
    assert order.data == b'{"a":[true],"n":1}'  # re-serialized as Go's json.Marshal does
    assert (order.topic, order.pubsub_name) == ("orders", PUBSUB)
    extensions = json_format.MessageToDict(order.extensions)
    assert (extensions["topic"], extensions["pubsubname"]) == ("orders", PUBSUB)
    assert extensions["traceid"] == extensions["traceparent"]
    assert str(extensions["traceparent"]).split("-")[1] == TRACE_ID
    assert "time" in extensions
    assert not {"id", "data", "source", "datacontenttype"} & set(extensions)
    assert metadata["traceparent"].split("-")[1] == TRACE_ID
    assert metadata["pubsubname"] == PUBSUB

    ((widget, _),) = [o for o in orders if o[0].path == "widgets"]
    assert (widget.type, widget.data, widget.data_content_type) == ("widget", b"w", "text/plain")

    first, again = app.on("flaky")
    assert first.id == again.id, "a RETRY is redelivered"
    assert (first.path, first.data) == ("", b"try again")

    (poisoned,) = app.on("poison")
    (dead,) = app.on("dlq")
    assert (dead.id, dead.path, dead.data) == (poisoned.id, "dead", b"\x01\x02")

    assert failed == []
    assert {e.data for e, _ in orders} >= {b"x", b"y"}
    code, _, reason = duplicate
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DAPR_PUBSUB_MARSHAL_EVENTS")
    assert alpha1 == grpc.StatusCode.INVALID_ARGUMENT


# --- TopicEventRequest and subscriptions, unit by unit ----------------------------------------


def test_event_data_as_daprd_hands_it_to_grpc_apps() -> None:
    def data(content_type: str, **fields: object) -> bytes:
        return event_data({"datacontenttype": content_type, **fields})

    assert data("application/octet-stream", data_base64="AAE=") == b"\x00\x01"
    assert data("text/plain; charset=utf-8", data="héllo") == "héllo".encode()
    assert data("application/xml", data="<a/>") == b"<a/>"
    assert data("application/json", data={"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'.encode()
    assert data("application/cloudevents+json", data=[1, 2]) == b"[1,2]"
    assert data("application/x-custom", data="dropped") == b""
    assert data("text/plain") == b""


def test_topic_event_request_keeps_the_subscription_topic_and_extensions() -> None:
    event = {
        "id": "1",
        "source": "a",
        "type": "t",
        "specversion": "1.0",
        "datacontenttype": "text/plain",
        "data": "d",
        "topic": "orders",
        "pubsubname": PUBSUB,
        "custom": {"n": 2},
    }
    delivery = Delivery("p", b"", event, [(b"pubsubname", PUBSUB.encode())], topic="dlq")
    request = topic_event_request(delivery)
    assert (request.topic, request.pubsub_name, request.path, request.data) == (
        "dlq",
        PUBSUB,
        "p",
        b"d",
    )
    extensions = json_format.MessageToDict(request.extensions)
    assert extensions == {"topic": "orders", "pubsubname": PUBSUB, "custom": {"n": 2}}


def test_subscriptions_from_list_topic_subscriptions() -> None:
    orders = from_proto(SUBSCRIPTIONS[0])
    assert orders.routes.choose({"type": "widget"}) == "widgets"
    assert orders.routes.choose({"type": "other"}) == "orders"
    assert from_proto(SUBSCRIPTIONS[1]).routes.choose({}) == ""
    poison = from_proto(SUBSCRIPTIONS[2])
    assert (poison.dead_letter_topic, poison.kind) == ("dlq", "PROGRAMMATIC")
    metadata = from_proto(subscription("m", metadata={"rawPayload": "true"}))
    assert metadata.raw_payload
    with pytest.raises(ValueError, match="required"):
        from_proto(appcallback_pb2.TopicSubscription(topic="no-pubsub"))


async def test_grpc_errors_of_on_topic_event_as_daprd_reads_them() -> None:
    """UNIMPLEMENTED drops the event; any other status is a retriable failure."""

    def channel(status: StatusCode) -> GrpcAppChannel:
        async def send(request: Request) -> Response:
            headers = [(b"content-type", b"application/grpc"), (b"grpc-status", b"%d" % status)]
            return Response(200, headers, EmptyBody())

        return GrpcAppChannel(send, b"app", None, None)

    event = {"id": "1", "datacontenttype": "text/plain", "data": "d"}
    delivery = Delivery("p", b"", event, [], topic="t")
    assert await channel(StatusCode.UNIMPLEMENTED).deliver(delivery) is Outcome.DROP
    for status in (StatusCode.NOT_FOUND, StatusCode.UNAVAILABLE):
        with pytest.raises(DeliveryFailed):
            await channel(status).deliver(delivery)


async def test_a_grpc_app_s_bulk_subscription_gets_batches_of_cloudevents(
    tmp_path: Path, grpc_subscriber: GrpcSubscriber, sdk_env: pytest.MonkeyPatch
) -> None:
    app = grpc_subscriber
    flags = ["--app-protocol", "grpc", *memory_resources(tmp_path)]
    async with sidecar("billing", app.port, tmp_path, *flags) as running:
        assert running.app.sidecar is not None
        await running.app.sidecar.subscriber.running.wait()
        ports = running.port("dapr-http"), running.port("dapr-grpc")

        def publish_three(d: DaprClient) -> None:
            for data in ("a", "b", "no"):
                d.publish_event(PUBSUB, "batched", data)

        await with_sdk(sdk_env, *ports, publish_three)
        entries = lambda: [e for b in app.batches for e in b.entries]  # noqa: E731
        # "no" is unanswered: retried by the broker until it is answered... never, so it
        # keeps coming back in later batches; "a" and "b" arrive once each.
        await app.wait_for(lambda: [e.cloud_event.data for e in entries()].count(b"no") >= 2)
    first = app.batches[0]
    assert (first.topic, first.pubsub_name, first.path) == ("batched", PUBSUB, "batched")
    assert first.type == "com.dapr.event.sent.bulk"
    data = [e.cloud_event.data for e in entries()]
    assert data.count(b"a") == 1
    assert data.count(b"b") == 1
    entry = next(e for e in entries() if e.cloud_event.data == b"a")
    assert entry.content_type == "application/cloudevents+json"
    assert (entry.cloud_event.source, entry.cloud_event.spec_version) == ("billing", "1.0")
    assert json_format.MessageToDict(entry.cloud_event.extensions)["topic"] == "batched"


async def test_a_streaming_subscription_gets_events_and_answers_each(
    tmp_path: Path, sdk_env: pytest.MonkeyPatch
) -> None:
    """The SDK's DaprClient.subscribe (SubscribeTopicEventsAlpha1): SUCCESS acknowledges an
    event; DROP, and RETRY with no retry policy, send it to the dead-letter topic."""
    answers: list[tuple[str, str]] = []
    finished = threading.Event()  # the test has seen what it needs: the app may hang up

    def stream(d: DaprClient) -> None:
        subscription = d.subscribe(PUBSUB, "live", dead_letter_topic="live-dead")
        try:
            while len(answers) < 3:
                message = subscription.next_message()
                if message is None:
                    continue
                data = message.data()
                if data == "again":
                    subscription.respond_retry(message)
                    answers.append((data, "retry"))
                elif data == "poison":
                    subscription.respond_drop(message)
                    answers.append((data, "drop"))
                else:
                    subscription.respond_success(message)
                    answers.append((data, "success"))
            finished.wait(DEADLINE)
        finally:
            subscription.close()

    app = SubscriberApp([route("live-dead", "/dead")])
    async with subscriber_app(app) as app_port:
        flags = memory_resources(tmp_path)
        async with sidecar("live", app_port, tmp_path, *flags) as running:
            runtime = running.app.sidecar
            assert runtime is not None
            await runtime.subscriber.running.wait()
            ports = running.port("dapr-http"), running.port("dapr-grpc")
            streaming = lambda: [s for s in runtime.subscriber.active if s.kind == "STREAMING"]  # noqa: E731
            async with trio.open_nursery() as nursery:
                nursery.start_soon(with_sdk, sdk_env, *ports, stream)
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: bool(streaming()))
                metadata = json.loads((await call(ports[0], "GET", "/v1.0/metadata")).body)
                for data in ("first", "again", "poison"):
                    await call(ports[0], "POST", "/v1.0/publish/pubsub/live", data.encode())
                try:
                    await app.wait_for(lambda: len(app.on("/dead")) == 2)
                finally:
                    finished.set()
            with trio.fail_after(DEADLINE):  # the stream ended: its subscription is gone
                await wait_until(lambda: not streaming())
    assert sorted(answers) == [("again", "retry"), ("first", "success"), ("poison", "drop")]
    assert sorted(str(r.event["data"]) for r in app.on("/dead")) == ["again", "poison"]
    (listed,) = [s for s in metadata["subscriptions"] if s["type"] == "STREAMING"]
    assert (listed["pubsubname"], listed["topic"], listed["deadLetterTopic"]) == (
        PUBSUB,
        "live",
        "live-dead",
    )
