"""One contract, every broker: at-least-once, groups, redelivery, size, order, restarts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio

from filters.pubsub.broker import Broker, Message, PublishRequest, SubscribeRequest
from tests.pubsub.brokers import (
    BrokerFactory,
    big_message_server,
    open_broker,
    unique_topic,
)
from tests.state.stores import wait_until

DEADLINE = 30  # seconds for any expected delivery; brokers with slow redelivery are tuned below it


class Inbox:
    """A handler that records what it got and can be told to fail or stall."""

    def __init__(self, *, fail_first: int = 0, stall: bool = False, delay: float = 0) -> None:
        self.received: list[bytes] = []
        self.acked: list[bytes] = []
        self.messages: list[Message] = []
        self.fail_first = fail_first
        self.stall = stall
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, message: Message) -> None:
        self.received.append(message.data)
        self.messages.append(message)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.stall:
                await trio.sleep_forever()
            if self.delay:
                await trio.sleep(self.delay)
            if self.fail_first > 0:
                self.fail_first -= 1
                raise RuntimeError("the app is not ready for this one")
        finally:
            self.in_flight -= 1
        self.acked.append(message.data)


async def publish_all(broker: Broker, topic: str, payloads: list[bytes]) -> None:
    for data in payloads:
        await broker.publish(PublishRequest(topic, data, "application/json"))


def payloads(n: int, tag: str = "m") -> list[bytes]:
    return [f'{{"{tag}":{i}}}'.encode() for i in range(n)]


async def test_every_message_reaches_the_subscriber(factory: BrokerFactory, tmp_path: Path) -> None:
    topic = unique_topic()
    inbox = Inbox()
    async with open_broker(factory, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 4), inbox)
        sent = payloads(50)
        await publish_all(broker, topic, sent)
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.acked) >= len(sent))
        nursery.cancel_scope.cancel()
    assert sorted(inbox.acked) == sorted(sent)
    assert inbox.messages[0].topic == topic


async def test_a_failed_delivery_is_redelivered(factory: BrokerFactory, tmp_path: Path) -> None:
    topic = unique_topic()
    inbox = Inbox(fail_first=2)
    async with open_broker(factory, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 1), inbox)
        await publish_all(broker, topic, [b'{"only":1}'])
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.acked) == 1)
        nursery.cancel_scope.cancel()
    assert inbox.received == [b'{"only":1}'] * 3


async def test_concurrency_is_bounded(factory: BrokerFactory, tmp_path: Path) -> None:
    topic = unique_topic()
    inbox = Inbox(delay=0.02)
    async with open_broker(factory, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 3), inbox)
        await publish_all(broker, topic, payloads(30))
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.acked) == 30)
        nursery.cancel_scope.cancel()
    assert 1 <= inbox.most_in_flight <= 3


async def test_members_of_a_group_share_and_groups_each_get_all(
    factory: BrokerFactory, tmp_path: Path
) -> None:
    topic = unique_topic()
    first, second, other = Inbox(delay=0.01), Inbox(delay=0.01), Inbox()
    sent = payloads(60)
    async with open_broker(factory, tmp_path) as a, open_broker(factory, tmp_path) as b:
        if not factory.shared:  # two broker objects know nothing of each other
            b = a
        async with trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, SubscribeRequest(topic, "shared", 1), first)
            await nursery.start(b.subscribe, SubscribeRequest(topic, "shared", 1), second)
            await nursery.start(b.subscribe, SubscribeRequest(topic, "other", 2), other)
            await publish_all(a, topic, sent)
            with trio.fail_after(DEADLINE):
                await wait_until(
                    lambda: (
                        len(first.acked) + len(second.acked) >= len(sent)
                        and len(other.acked) >= len(sent)
                    )
                )
            nursery.cancel_scope.cancel()
    shared = Counter(first.acked + second.acked)
    assert set(shared) == set(sent)
    assert first.acked, "the second member took every message"
    assert second.acked, "the first member took every message"
    assert sorted(other.acked) == sorted(sent)


async def test_unacknowledged_messages_go_to_the_next_member(
    factory: BrokerFactory, tmp_path: Path
) -> None:
    """A subscriber that dies holding messages (cancelled mid-handler) loses none of them."""
    topic = unique_topic()
    stuck, rescuer = Inbox(stall=True), Inbox()
    sent = payloads(5)
    async with open_broker(factory, tmp_path) as a:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, SubscribeRequest(topic, "g1", 5), stuck)
            await publish_all(a, topic, sent)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(stuck.received) >= 1)
            nursery.cancel_scope.cancel()
    async with open_broker(factory, tmp_path) as b, trio.open_nursery() as nursery:
        await nursery.start(b.subscribe, SubscribeRequest(topic, "g1", 5), rescuer)
        if not factory.durable:  # nothing outlives the broker object: publish again
            await publish_all(b, topic, sent)
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: set(rescuer.acked) >= set(sent))
        nursery.cancel_scope.cancel()


async def test_a_one_megabyte_message_arrives_whole(factory: BrokerFactory, tmp_path: Path) -> None:
    topic = unique_topic()
    inbox = Inbox()
    big = b'{"blob":"' + b"x" * (1024 * 1024) + b'"}'
    with big_message_server(factory, tmp_path) as server:
        async with open_broker(factory, tmp_path, server) as broker, trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 1), inbox)
            await publish_all(broker, topic, [big])
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(inbox.acked) == 1)
            nursery.cancel_scope.cancel()
    assert inbox.acked == [big]


async def test_one_subscriber_sees_publish_order(
    ordered_factory: BrokerFactory, tmp_path: Path
) -> None:
    factory = ordered_factory
    topic = unique_topic()
    inbox = Inbox()
    sent = payloads(100)
    async with open_broker(factory, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 1), inbox)
        await publish_all(broker, topic, sent)
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.acked) == len(sent))
        nursery.cancel_scope.cancel()
    assert inbox.acked == sent


async def test_metadata_and_content_type_travel(factory: BrokerFactory, tmp_path: Path) -> None:
    topic = unique_topic()
    inbox = Inbox()
    async with open_broker(factory, tmp_path) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 1), inbox)
        await broker.publish(PublishRequest(topic, b"\x00\x01raw", "application/octet-stream"))
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.acked) == 1)
        nursery.cancel_scope.cancel()
    assert inbox.messages[0].data == b"\x00\x01raw"


async def test_messages_survive_a_broker_restart(
    durable_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Published before and after the broker restarts, with a subscriber attached throughout:
    every message whose publish succeeded arrives."""
    factory = durable_factory
    topic = unique_topic()
    inbox = Inbox()
    if factory.private is None:  # embedded: the broker object itself is the server
        async with open_broker(factory, tmp_path) as broker:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 1), inbox)
                nursery.cancel_scope.cancel()
            await publish_all(broker, topic, payloads(20))
        async with open_broker(factory, tmp_path) as broker, trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 1), inbox)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: set(inbox.acked) >= set(payloads(20)))
            nursery.cancel_scope.cancel()
        return
    with factory.private(tmp_path) as server:
        async with open_broker(factory, tmp_path, server.metadata) as broker:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.subscribe, SubscribeRequest(topic, "g1", 2), inbox)
                before, after = payloads(20, "before"), payloads(20, "after")
                await publish_all(broker, topic, before)
                await trio.to_thread.run_sync(server.restart)
                accepted = list(before)
                for data in after:  # publishes may fail while the client reconnects
                    with trio.fail_after(DEADLINE):
                        while True:
                            try:
                                await broker.publish(PublishRequest(topic, data))
                                break
                            except Exception:
                                await trio.sleep(0.1)
                    accepted.append(data)
                with trio.fail_after(DEADLINE * 2):
                    await wait_until(lambda: set(inbox.acked) >= set(accepted))
                nursery.cancel_scope.cancel()
