"""pubsub.jetstream against the NATS on 127.0.0.1:4222: headers, ackWait, streams, metadata."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import nats.js.errors
import pytest
import trio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamInfo

from config.dapr.component import Component
from filters.pubsub.aio import AsyncioThread
from filters.pubsub.broker import Message, PublishRequest, PubSubError, SubscribeRequest
from filters.pubsub.jetstream import JetStreamBroker, jetstream_name
from tests.pubsub.backends.jetstream import FACTORY, SHARED_URL
from tests.pubsub.brokers import component, free_port, open_broker, unique_topic
from tests.state.stores import wait_until

T = TypeVar("T")
DEADLINE = 30


@pytest.fixture(autouse=True)
def _nats() -> None:
    FACTORY.require()


class Admin:
    """Direct JetStream access beside the broker: inspect and delete streams."""

    def __init__(self, thread: AsyncioThread, js: JetStreamContext) -> None:
        self.thread = thread
        self.js = js
        self.created: list[str] = []

    async def call(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await self.thread.call(factory)

    async def stream(self, name: str) -> StreamInfo | None:
        try:
            return await self.call(lambda: self.js.stream_info(name))
        except nats.js.errors.NotFoundError:
            return None

    async def has_consumer(self, stream: str, consumer: str) -> bool:
        try:
            await self.call(lambda: self.js.consumer_info(stream, consumer))
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def add_stream(self, name: str, subjects: list[str]) -> None:
        self.created.append(name)
        await self.call(lambda: self.js.add_stream(name=name, subjects=subjects))

    async def delete_streams(self, *names: str) -> None:
        for name in {*names, *self.created}:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.call(functools.partial(self.js.delete_stream, name))


@asynccontextmanager
async def admin() -> AsyncIterator[Admin]:
    thread = AsyncioThread("nats-admin")
    thread.start()
    client = Client()
    try:
        await thread.call(lambda: client.connect(SHARED_URL, allow_reconnect=False))
        yield Admin(thread, client.jetstream())
    finally:
        await thread.call(client.close)
        await thread.aclose()


class Inbox:
    def __init__(self, *, stall_first: bool = False) -> None:
        self.messages: list[Message] = []
        self.acked: list[bytes] = []
        self.stall_first = stall_first

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if self.stall_first:
            self.stall_first = False
            await trio.sleep_forever()
        self.acked.append(message.data)


def jetstream_component(metadata: dict[str, str], init_timeout: float = 10.0) -> Component:
    return Component(
        name="js",
        namespace="default",
        type="pubsub.jetstream",
        version="v1",
        init_timeout=init_timeout,
        ignore_errors=False,
        metadata=metadata,
        secret_refs={},
        scopes=(),
    )


async def test_content_type_and_metadata_travel_as_headers(tmp_path: Path) -> None:
    topic, inbox = unique_topic("js"), Inbox()
    metadata = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "custom-key": "v 1"}
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
                await broker.publish(PublishRequest(topic, b"<x/>", "application/xml", metadata))
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: len(inbox.acked) == 1)
                nursery.cancel_scope.cancel()
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))
    got = inbox.messages[0]
    assert (got.topic, got.data, got.content_type) == (topic, b"<x/>", "application/xml")
    assert got.metadata == metadata


async def test_a_cloudevent_id_is_published_once(tmp_path: Path) -> None:
    """The CloudEvent id is the Nats-Msg-Id: a retried publish is stored once."""
    topic = unique_topic("js")
    event = json.dumps({"id": "evt-1", "specversion": "1.0", "data": {}}).encode()
    request = PublishRequest(topic, event, "application/cloudevents+json")
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            await broker.publish(request)
            await broker.publish(request)
            info = await nats_admin.stream(jetstream_name(topic))
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))
    assert info is not None
    assert info.state.messages == 1


async def test_a_message_held_past_ack_wait_goes_to_another_member(tmp_path: Path) -> None:
    topic = unique_topic("js")
    stuck, other = Inbox(stall_first=True), Inbox()
    meta = {"ackWait": "1s"}
    async with (
        admin() as nats_admin,
        open_broker(FACTORY, tmp_path, meta) as a,
        open_broker(FACTORY, tmp_path, meta) as b,
    ):
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(a.subscribe, SubscribeRequest(topic, "g1"), stuck)
                await a.publish(PublishRequest(topic, b"held"))
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: len(stuck.messages) == 1)
                await nursery.start(b.subscribe, SubscribeRequest(topic, "g1"), other)
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: other.acked == [b"held"])
                nursery.cancel_scope.cancel()
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))
    assert stuck.acked == []


async def test_a_new_group_starts_at_new_messages(tmp_path: Path) -> None:
    topic, inbox = unique_topic("js"), Inbox()
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            await broker.publish(PublishRequest(topic, b"before"))
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
                await broker.publish(PublishRequest(topic, b"after"))
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: b"after" in inbox.acked)
                nursery.cancel_scope.cancel()
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))
    assert inbox.acked == [b"after"]  # in order: "before" would have come first


async def test_deliver_policy_all_replays_the_stream(tmp_path: Path) -> None:
    topic, inbox = unique_topic("js"), Inbox()
    async with (
        admin() as nats_admin,
        open_broker(FACTORY, tmp_path, {"deliverPolicy": "all"}) as broker,
    ):
        try:
            await broker.publish(PublishRequest(topic, b"before"))
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
                await broker.publish(PublishRequest(topic, b"after"))
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: len(inbox.acked) == 2)
                nursery.cancel_scope.cancel()
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))
    assert inbox.acked == [b"before", b"after"]


async def test_a_deleted_consumer_is_created_again(tmp_path: Path) -> None:
    topic, inbox = unique_topic("js"), Inbox()
    stream, consumer = jetstream_name(topic), jetstream_name(f"g1-{topic}")
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
                await nats_admin.call(lambda: nats_admin.js.delete_consumer(stream, consumer))
                with trio.fail_after(DEADLINE):
                    await wait_until_async(lambda: nats_admin.has_consumer(stream, consumer))
                await broker.publish(PublishRequest(topic, b"after"))
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: inbox.acked == [b"after"])
                nursery.cancel_scope.cancel()
        finally:
            await nats_admin.delete_streams(stream)


async def wait_until_async(condition: Callable[[], Awaitable[bool]]) -> None:
    while True:
        if await condition():
            return
        await trio.sleep(0.05)


async def test_a_missing_stream_is_created_for_the_topic(tmp_path: Path) -> None:
    topic = f"{unique_topic('js')}.orders"  # a dotted subject; the stream name cannot have dots
    name = jetstream_name(topic)
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "app.v1"), Inbox())
                nursery.cancel_scope.cancel()
            info = await nats_admin.stream(name)
            consumer = jetstream_name(f"app.v1-{topic}")
            consumer_info = await nats_admin.call(
                lambda: nats_admin.js.consumer_info(name, consumer)
            )
        finally:
            await nats_admin.delete_streams(name)
    assert "." not in name
    assert info is not None
    assert (info.config.subjects, info.config.storage) == ([topic], StorageType.FILE)
    assert consumer_info.config.filter_subject == topic


async def test_a_named_stream_is_created_and_extended(tmp_path: Path) -> None:
    first, second = unique_topic("js"), unique_topic("js")
    stream = jetstream_name(unique_topic("meshwire-test"))
    async with (
        admin() as nats_admin,
        open_broker(FACTORY, tmp_path, {"streamName": stream}) as broker,
    ):
        try:
            await broker.publish(PublishRequest(first, b"1"))
            await broker.publish(PublishRequest(second, b"2"))
            info = await nats_admin.stream(stream)
            stray = await nats_admin.stream(jetstream_name(first))
        finally:
            await nats_admin.delete_streams(stream)
    assert info is not None
    assert info.config.subjects == [first, second]
    assert info.state.messages == 2
    assert stray is None


async def test_an_existing_stream_that_captures_the_topic_is_used(tmp_path: Path) -> None:
    prefix = unique_topic("js")
    stream, topic = jetstream_name(f"{prefix}-all"), f"{prefix}.created"
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            await nats_admin.add_stream(stream, [f"{prefix}.>"])
            await broker.publish(PublishRequest(topic, b"1"))
            info = await nats_admin.stream(stream)
            stray = await nats_admin.stream(jetstream_name(topic))
        finally:
            await nats_admin.delete_streams(stream, jetstream_name(topic))
    assert info is not None
    assert info.state.messages == 1
    assert stray is None


async def test_a_topic_captured_by_another_stream_than_stream_name_is_refused(
    tmp_path: Path,
) -> None:
    topic = unique_topic("js")
    other, wanted = jetstream_name(f"{topic}-other"), jetstream_name(f"{topic}-wanted")
    async with (
        admin() as nats_admin,
        open_broker(FACTORY, tmp_path, {"streamName": wanted}) as broker,
    ):
        try:
            await nats_admin.add_stream(other, [topic])
            with pytest.raises(PubSubError, match="captured by stream"):
                await broker.publish(PublishRequest(topic, b"1"))
        finally:
            await nats_admin.delete_streams(other, wanted)


async def test_invalid_subjects_are_refused(tmp_path: Path) -> None:
    async with open_broker(FACTORY, tmp_path) as broker:
        for topic in ("has space", "a..b", "", "orders.*", "orders.>"):
            with pytest.raises(PubSubError):
                await broker.publish(PublishRequest(topic, b"1"))


async def test_more_than_the_shared_servers_max_payload_is_refused(tmp_path: Path) -> None:
    topic = unique_topic("js")
    big = b'{"blob":"' + b"x" * (1024 * 1024) + b'"}'
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path) as broker:
        try:
            with pytest.raises(PubSubError, match="max_payload"):
                await broker.publish(PublishRequest(topic, big))
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))


async def test_a_one_megabyte_message_on_a_server_that_permits_it(tmp_path: Path) -> None:
    assert FACTORY.private is not None
    topic, inbox = unique_topic("js"), Inbox()
    big = b'{"blob":"' + b"x" * (1024 * 1024) + b'"}'
    with FACTORY.private(tmp_path) as server:
        async with (
            open_broker(FACTORY, tmp_path, server.metadata) as broker,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
            await broker.publish(PublishRequest(topic, big, "application/json"))
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(inbox.acked) == 1)
            nursery.cancel_scope.cancel()
    assert inbox.acked == [big]


async def test_an_unreachable_server_fails_init() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    broker = JetStreamBroker.from_component(jetstream_component({"natsURL": url}, 1.0))
    try:
        with pytest.raises(PubSubError, match="cannot connect"):
            await broker.init()
    finally:
        await broker.aclose()


@pytest.mark.parametrize(
    ("metadata", "complaint"),
    [
        ({}, "natsURL"),
        ({"natsURL": SHARED_URL, "deliverPolicy": "sometimes"}, "deliverPolicy"),
        ({"natsURL": SHARED_URL, "deliverPolicy": "sequence"}, "startSequence"),
        ({"natsURL": SHARED_URL, "deliverPolicy": "time"}, "startTime"),
        ({"natsURL": SHARED_URL, "ackPolicy": "none"}, "ackPolicy"),
        ({"natsURL": SHARED_URL, "ackWait": "soon"}, "ackWait"),
        ({"natsURL": SHARED_URL, "backOff": "1s, later"}, "backOff"),
        ({"natsURL": SHARED_URL, "maxDeliver": "many"}, "maxDeliver"),
        ({"natsURL": SHARED_URL, "memoryStorage": "perhaps"}, "memoryStorage"),
        ({"natsURL": SHARED_URL, "jwt": "eyJ"}, "seedKey"),
        ({"natsURL": SHARED_URL, "tls_client_key": "/k.pem"}, "tls_client_cert"),
        ({"natsURL": SHARED_URL, "streamName": "has.dots"}, "streamName"),
    ],
)
def test_metadata_errors(metadata: dict[str, str], complaint: str) -> None:
    with pytest.raises(PubSubError, match=complaint):
        JetStreamBroker.from_component(component("pubsub.jetstream", metadata))


async def test_a_bad_consumer_config_fails_the_subscription(tmp_path: Path) -> None:
    """The server refuses a backOff longer than maxDeliver allows: a configuration error."""
    topic = unique_topic("js")
    meta = {"backOff": "1s, 2s, 3s", "maxDeliver": "2"}
    async with admin() as nats_admin, open_broker(FACTORY, tmp_path, meta) as broker:
        try:
            with pytest.raises(PubSubError):
                await broker.subscribe(SubscribeRequest(topic, "g1"), Inbox())
        finally:
            await nats_admin.delete_streams(jetstream_name(topic))


def test_names_are_made_safe_and_stay_distinct() -> None:
    assert jetstream_name("orders-v1_x") == "orders-v1_x"
    dotted, starred = jetstream_name("a.b"), jetstream_name("a*b")
    assert dotted != starred
    for name in (dotted, starred, jetstream_name("a/b > c"), jetstream_name("x" * 500)):
        assert all(c.isalnum() or c in "-_" for c in name)
        assert len(name) <= 200
