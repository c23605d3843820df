"""pubsub.rabbitmq against a real RabbitMQ: topology, TTL, failures, metadata errors, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import pytest
import trio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from filters.pubsub.broker import Broker, Message, PublishRequest, PubSubError, SubscribeRequest
from filters.pubsub.rabbitmq import RabbitMQBroker
from tests.pubsub.backends.rabbitmq import FACTORY, SHARED_URL, private_rabbitmq
from tests.pubsub.brokers import component, open_broker, unique_topic
from tests.state.stores import wait_until

DEADLINE = 30
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _rabbitmq() -> None:
    FACTORY.require()


async def amqp(action: Callable[[AbstractChannel], Coroutine[Any, Any, T]]) -> T:
    """Run `action` on a channel of a connection of its own to the shared node."""

    async def run() -> T:
        async with await aio_pika.connect(SHARED_URL) as connection:
            return await action(await connection.channel())

    return await trio.to_thread.run_sync(asyncio.run, run())


async def message_count(queue: str) -> int:
    async def count(channel: AbstractChannel) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0

    return await amqp(count)


async def wait_for_count(queue: str, expected: int) -> None:
    """Poll the queue's count of ready messages until it is `expected`."""
    with trio.fail_after(DEADLINE):
        while True:
            if await message_count(queue) == expected:
                return
            await trio.sleep(0.05)


async def take(queue: str) -> AbstractIncomingMessage | None:
    async def get(channel: AbstractChannel) -> AbstractIncomingMessage | None:
        declared = await channel.declare_queue(queue, passive=True)
        return await declared.get(no_ack=True, fail=False)

    return await amqp(get)


class Topology:
    """The queues and exchanges a test made, deleted after it."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def topic(self, group: str = "g1") -> str:
        topic = unique_topic("rmq")
        self.exchanges.append(topic)
        self.queues.append(f"{group}-{topic}")
        return topic

    async def delete(self, channel: AbstractChannel) -> None:
        for queue in self.queues:
            await channel.queue_delete(queue)
        for exchange in self.exchanges:
            await channel.exchange_delete(exchange)


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    made = Topology()
    yield made
    await amqp(made.delete)


class Inbox:
    def __init__(self, *, fail: bool = False, fail_on: bytes | None = None) -> None:
        self.messages: list[Message] = []
        self.fail = fail
        self.fail_on = fail_on

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if self.fail or message.data == self.fail_on:
            raise RuntimeError("the app refuses it")


async def subscribed_once(broker: Broker, topic: str, group: str = "g1") -> None:
    """Subscribe and leave: the group's queue now exists and keeps what is published."""
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, group), Inbox())
        nursery.cancel_scope.cancel()


async def test_each_group_has_a_durable_queue_named_group_dash_topic(
    tmp_path: Path, topology: Topology
) -> None:
    topic = topology.topic()
    topology.queues.append(f"g2-{topic}")
    async with open_broker(FACTORY, tmp_path) as broker:
        await subscribed_once(broker, topic, "g1")
        await subscribed_once(broker, topic, "g2")
        await broker.publish(PublishRequest(topic, b"kept"))
        for queue in (f"g1-{topic}", f"g2-{topic}"):
            await wait_for_count(queue, 1)
    kept = await take(f"g1-{topic}")
    assert kept is not None
    assert kept.body == b"kept"
    assert kept.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_subscription_queue_name_overrides_the_group(
    tmp_path: Path, topology: Topology
) -> None:
    topic = topology.topic()
    custom = f"custom-{topic}"
    topology.queues.append(custom)
    request = SubscribeRequest(topic, "g1", metadata={"queueName": custom})
    async with open_broker(FACTORY, tmp_path) as broker:
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, request, Inbox())
            nursery.cancel_scope.cancel()
        await broker.publish(PublishRequest(topic, b"x"))
    await wait_for_count(custom, 1)


async def test_content_type_and_metadata_come_back(tmp_path: Path, topology: Topology) -> None:
    topic = topology.topic()
    inbox = Inbox()
    sent = PublishRequest(topic, b"<a/>", "application/xml", {"tenant": "t1", "rawPayload": "true"})
    async with open_broker(FACTORY, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
        await broker.publish(sent)
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.messages) == 1)
        nursery.cancel_scope.cancel()
    got = inbox.messages[0]
    assert (got.topic, got.data, got.content_type) == (topic, b"<a/>", "application/xml")
    assert got.metadata["tenant"] == "t1"
    assert got.metadata["rawPayload"] == "true"


async def test_ttl_travels_as_the_message_expiration(tmp_path: Path, topology: Topology) -> None:
    topic = topology.topic()
    async with open_broker(FACTORY, tmp_path, {"ttlInSeconds": "120"}) as broker:
        await subscribed_once(broker, topic)
        await broker.publish(PublishRequest(topic, b"default"))
        await broker.publish(PublishRequest(topic, b"own", metadata={"ttlInSeconds": "30"}))
    await wait_for_count(f"g1-{topic}", 2)
    first, second = await take(f"g1-{topic}"), await take(f"g1-{topic}")
    assert first is not None
    assert second is not None
    assert (first.body, first.expiration) == (b"default", 120)
    assert (second.body, second.expiration) == (b"own", 30)


async def test_an_expired_message_is_never_delivered(tmp_path: Path, topology: Topology) -> None:
    """TTL 0 expires a message that no consumer takes at once; the next one arrives alone."""
    topic = topology.topic()
    inbox = Inbox()
    async with open_broker(FACTORY, tmp_path) as broker:
        await subscribed_once(broker, topic)
        await broker.publish(PublishRequest(topic, b"stale", metadata={"ttlInSeconds": "0"}))
        await broker.publish(PublishRequest(topic, b"fresh"))
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(inbox.messages) >= 1)
            nursery.cancel_scope.cancel()
    assert [m.data for m in inbox.messages] == [b"fresh"]


async def test_a_failure_goes_to_the_dead_letter_queue_when_enabled(
    tmp_path: Path, topology: Topology
) -> None:
    topic = topology.topic()
    queue = f"g1-{topic}"
    topology.queues.append(f"dlq-{queue}")
    topology.exchanges.append(f"dlx-{queue}")
    inbox = Inbox(fail=True)
    async with open_broker(FACTORY, tmp_path, {"enableDeadLetter": "true"}) as broker:
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
            await broker.publish(PublishRequest(topic, b"poison"))
            await wait_for_count(f"dlq-{queue}", 1)
            nursery.cancel_scope.cancel()
    assert [m.data for m in inbox.messages] == [b"poison"]
    assert await message_count(queue) == 0


async def test_requeue_in_failure_false_drops_a_failed_message(
    tmp_path: Path, topology: Topology
) -> None:
    """Dapr's explicit opt-out of redelivery: the message is nacked without requeue. With one
    message in flight at a time, `next` arrives only after `dropped` was settled."""
    topic = topology.topic()
    inbox = Inbox(fail_on=b"dropped")
    async with open_broker(FACTORY, tmp_path, {"requeueInFailure": "false"}) as broker:
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
            await broker.publish(PublishRequest(topic, b"dropped"))
            await broker.publish(PublishRequest(topic, b"next"))
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: b"next" in [m.data for m in inbox.messages])
            nursery.cancel_scope.cancel()
    assert [m.data for m in inbox.messages] == [b"dropped", b"next"]


async def test_a_failed_message_is_requeued_by_default(tmp_path: Path, topology: Topology) -> None:
    topic = topology.topic()
    inbox = Inbox(fail=True)
    async with open_broker(FACTORY, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1"), inbox)
        await broker.publish(PublishRequest(topic, b"again"))
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.messages) >= 3)
        nursery.cancel_scope.cancel()
    assert {m.data for m in inbox.messages} == {b"again"}


async def test_a_queue_declared_otherwise_is_a_configuration_error(
    tmp_path: Path, topology: Topology
) -> None:
    topic = topology.topic()

    async def declare(channel: AbstractChannel) -> None:
        await channel.declare_queue(f"g1-{topic}", durable=True, arguments={"x-max-length": 5})

    await amqp(declare)
    async with open_broker(FACTORY, tmp_path) as broker:
        with pytest.raises(PubSubError, match="PRECONDITION_FAILED"):
            await broker.subscribe(SubscribeRequest(topic, "g1"), Inbox())


@pytest.mark.parametrize(
    ("metadata", "complaint"),
    [
        ({"deliveryMode": "3"}, "deliveryMode"),
        ({"exchangeKind": "x-bogus"}, "exchangeKind"),
        ({"protocol": "amqps"}, "protocol"),
        ({"connectionString": "http://127.0.0.1:5672"}, "connectionString"),
        ({"ttlInSeconds": "soon"}, "ttlInSeconds"),
        ({"durable": "maybe"}, "durable"),
        ({"concurrencyMode": "serial"}, "concurrencyMode"),
        ({"prefetchCount": "-1"}, "prefetchCount"),
        ({"maxLen": "many"}, "maxLen"),
        ({"saslExternal": "true"}, "saslExternal"),
    ],
)
def test_bad_metadata_is_refused(metadata: dict[str, str], complaint: str) -> None:
    merged = {"connectionString": SHARED_URL, **metadata}
    with pytest.raises(PubSubError, match=complaint):
        RabbitMQBroker.from_component(component("pubsub.rabbitmq", merged))


@pytest.mark.parametrize("metadata", [{"ttlInSeconds": "-1"}, {"priority": "300"}])
async def test_bad_publish_metadata_is_refused(tmp_path: Path, metadata: dict[str, str]) -> None:
    async with open_broker(FACTORY, tmp_path) as broker:
        with pytest.raises(PubSubError):
            await broker.publish(PublishRequest(unique_topic("rmq"), b"x", metadata=metadata))


async def test_init_fails_when_nothing_listens(tmp_path: Path) -> None:
    from tests.pubsub.brokers import free_port

    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    broker = RabbitMQBroker.from_component(component("pubsub.rabbitmq", {"connectionString": url}))
    try:
        with pytest.raises(PubSubError, match="cannot reach"):
            await broker.init()
    finally:
        await broker.aclose()


async def test_init_fails_on_bad_credentials(tmp_path: Path) -> None:
    url = "amqp://guest:wrong@127.0.0.1:5672/"
    broker = RabbitMQBroker.from_component(component("pubsub.rabbitmq", {"connectionString": url}))
    try:
        with pytest.raises(PubSubError):
            await broker.init()
    finally:
        await broker.aclose()


async def test_publish_fails_while_the_broker_is_down_and_works_after(tmp_path: Path) -> None:
    with private_rabbitmq(tmp_path) as server:
        async with open_broker(FACTORY, tmp_path, server.metadata) as broker:
            topic = unique_topic("rmq")
            await broker.publish(PublishRequest(topic, b"before"))
            await trio.to_thread.run_sync(server.stop)
            with pytest.raises(PubSubError):
                await broker.publish(PublishRequest(topic, b"during"))
            await trio.to_thread.run_sync(server.start)
            with trio.fail_after(DEADLINE):
                while True:
                    try:
                        await broker.publish(PublishRequest(topic, b"after"))
                        break
                    except PubSubError:
                        await trio.sleep(0.1)
