"""RedisBroker on the real Redis: Dapr's entry layout, reclaiming, trimming, settings, outages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis
import trio

from filters.pubsub.broker import Message, PublishRequest, PubSubError, SubscribeRequest
from filters.pubsub.redis import RedisBroker, RedisPubSubSettings
from filters.pubsub.registry import PubSubInitError, construct
from tests.pubsub.backends.redis import ADDRESS, private_redis
from tests.pubsub.brokers import ServerProcess, component, free_port, require_service, unique_topic
from tests.state.stores import wait_until

HOST = "{}:{}".format(*ADDRESS)
DEADLINE = 30
FAST = {"redisHost": HOST, "processingTimeout": "100ms", "redeliverInterval": "50ms"}


class Inbox:
    """Records what arrives; fails the first `fail_first` deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.messages: list[Message] = []
        self.acked: list[bytes] = []
        self.fail_first = fail_first

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RuntimeError("not now")
        self.acked.append(message.data)


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    require_service("Redis", ADDRESS)
    client = redis.Redis(host=ADDRESS[0], port=ADDRESS[1])
    yield client
    client.close()


@pytest.fixture
def topic(raw: redis.Redis) -> Iterator[str]:
    """A fresh stream name; the stream is deleted afterwards."""
    chosen = unique_topic("meshwire-redis")
    yield chosen
    raw.delete(chosen)


@asynccontextmanager
async def opened(metadata: dict[str, str]) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker.from_component(component("pubsub.redis", metadata))
    await broker.init()
    try:
        yield broker
    finally:
        await broker.aclose()


async def settle(condition: Callable[[], bool]) -> None:
    with trio.fail_after(DEADLINE):
        await wait_until(condition)


def pending(raw: redis.Redis, topic: str, group: str) -> int:
    count: int = raw.xpending(topic, group)["pending"]
    return count


async def test_an_entry_holds_what_dapr_writes(raw: redis.Redis, topic: str) -> None:
    meta = {"ttlInSeconds": "5", "traceparent": "00-abc-def-01"}
    async with opened({"redisHost": HOST}) as broker:
        await broker.publish(PublishRequest(topic, b'{"a":1}', "application/json", meta))
        await broker.publish(PublishRequest(topic, b"plain"))
    (_, first), (_, second) = raw.xrange(topic)
    assert first[b"data"] == b'{"a":1}'
    assert json.loads(first[b"metadata"]) == meta
    assert first[b"contentType"] == b"application/json"
    assert second == {b"data": b"plain"}


async def test_entries_written_by_dapr_are_read(raw: redis.Redis, topic: str) -> None:
    inbox = Inbox()
    async with opened({"redisHost": HOST}) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), inbox)
        raw.xadd(topic, {"data": b"one", "metadata": '{"k":"v"}'})
        raw.xadd(topic, {"data": b"two", "metadata": "not json"})
        await settle(lambda: len(inbox.acked) == 2)
        nursery.cancel_scope.cancel()
    one, two = inbox.messages
    assert (one.data, one.content_type, dict(one.metadata)) == (b"one", None, {"k": "v"})
    assert (two.data, dict(two.metadata)) == (b"two", {})
    assert one.topic == topic


async def test_a_new_group_reads_the_stream_from_its_start(raw: redis.Redis, topic: str) -> None:
    """As in Dapr, the group is created at id 0: what was published before it existed arrives."""
    inbox = Inbox()
    async with opened({"redisHost": HOST}) as broker:
        await broker.publish(PublishRequest(topic, b"early"))
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "late-group"), inbox)
            await settle(lambda: inbox.acked == [b"early"])
            nursery.cancel_scope.cancel()


async def test_a_dead_consumers_pending_entries_are_reclaimed(raw: redis.Redis, topic: str) -> None:
    raw.xgroup_create(topic, "g", "0", mkstream=True)
    for i in range(3):
        raw.xadd(topic, {"data": f"m{i}".encode()})
    raw.xreadgroup("g", "ghost", {topic: ">"}, count=10)  # read, then never acknowledged
    inbox = Inbox()
    async with opened(FAST) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g", 2), inbox)
        await settle(lambda: len(inbox.acked) == 3 and pending(raw, topic, "g") == 0)
        nursery.cancel_scope.cancel()
    assert sorted(inbox.acked) == [b"m0", b"m1", b"m2"]


async def test_idle_consumers_holding_nothing_are_removed(
    raw: redis.Redis, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("filters.pubsub.redis.PRUNE_IDLE", 0.0)
    raw.xgroup_create(topic, "g", "0", mkstream=True)
    raw.xadd(topic, {"data": b"held"})
    raw.xreadgroup("g", "holder", {topic: ">"}, count=1)  # keeps a pending entry: stays
    raw.xgroup_createconsumer(topic, "g", "left-behind")
    await settle(lambda: all(c["idle"] > 0 for c in raw.xinfo_consumers(topic, "g")))
    async with opened({"redisHost": HOST}) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), Inbox())
        await settle(lambda: "left-behind" not in consumers(raw, topic))
        nursery.cancel_scope.cancel()
    assert "holder" in consumers(raw, topic)


def consumers(raw: redis.Redis, topic: str) -> set[str]:
    return {c["name"].decode() for c in raw.xinfo_consumers(topic, "g")}


async def test_a_failed_delivery_stays_pending_until_redelivered(
    raw: redis.Redis, topic: str
) -> None:
    inbox = Inbox(fail_first=1)
    async with opened(FAST) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), inbox)
        await broker.publish(PublishRequest(topic, b"x"))
        await settle(lambda: inbox.acked == [b"x"] and pending(raw, topic, "g") == 0)
        nursery.cancel_scope.cancel()
    assert [m.data for m in inbox.messages] == [b"x", b"x"]


async def test_ack_on_error_acknowledges_a_failed_delivery(raw: redis.Redis, topic: str) -> None:
    inbox = Inbox(fail_first=1)
    async with opened({**FAST, "ackOnError": "true"}) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), inbox)
        await broker.publish(PublishRequest(topic, b"x"))
        await settle(lambda: len(inbox.messages) == 1 and pending(raw, topic, "g") == 0)
        await broker.publish(PublishRequest(topic, b"y"))
        await settle(lambda: inbox.acked == [b"y"])
        nursery.cancel_scope.cancel()
    assert [m.data for m in inbox.messages] == [b"x", b"y"]


async def test_a_deleted_group_is_recreated(raw: redis.Redis, topic: str) -> None:
    inbox = Inbox()
    async with opened({"redisHost": HOST}) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), inbox)
        raw.xgroup_destroy(topic, "g")
        raw.xadd(topic, {"data": b"after"})
        await settle(lambda: inbox.acked == [b"after"])
        nursery.cancel_scope.cancel()


async def test_max_len_approx_trims_the_stream(raw: redis.Redis, topic: str) -> None:
    async with opened({"redisHost": HOST, "maxLenApprox": "10"}) as broker:
        for i in range(1000):
            await broker.publish(PublishRequest(topic, str(i).encode()))
    assert 10 <= raw.xlen(topic) < 1000  # "~": whole nodes go, so a little more than 10 stays
    (_, newest), *_ = raw.xrevrange(topic, count=1)
    assert newest[b"data"] == b"999"


async def test_stream_ttl_trims_old_entries(raw: redis.Redis, topic: str) -> None:
    for i in range(1, 301):
        raw.xadd(topic, {"data": b"ancient"}, id=f"{i}-0")
    async with opened({"redisHost": HOST, "streamTTL": "1h"}) as broker:
        await broker.publish(PublishRequest(topic, b"fresh"))
    assert raw.xlen(topic) < 301
    (_, newest), *_ = raw.xrevrange(topic, count=1)
    assert newest[b"data"] == b"fresh"


def settings(**metadata: str) -> RedisPubSubSettings:
    return RedisPubSubSettings.parse(component("pubsub.redis", {"redisHost": HOST, **metadata}))


def test_settings_follow_dapr_defaults_and_units() -> None:
    default = settings()
    assert (default.processing_timeout, default.redeliver_interval) == (60.0, 15.0)
    assert (default.queue_depth, default.max_len_approx, default.stream_ttl) == (100, None, None)
    assert default.redelivers
    assert settings(processingTimeout="1500").processing_timeout == 1.5  # bare numbers: ms
    assert settings(redeliverInterval="2s").redeliver_interval == 2.0
    assert not settings(redeliverInterval="0").redelivers
    assert settings(readTimeout="-1").read_timeout is None
    assert (settings(redisHost="[::1]:7000").host, settings(redisHost="[::1]:7000").port) == (
        "::1",
        7000,
    )
    assert settings(redisHost="cache", redisPort="7001").port == 7001
    assert settings(maxLenApprox="0").max_len_approx is None


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"redisHost": "cache:99999"},
        {"redisHost": HOST, "processingTimeout": "soon"},
        {"redisHost": HOST, "redeliverInterval": "-5"},
        {"redisHost": HOST, "maxLenApprox": "many"},
        {"redisHost": HOST, "maxLenApprox": "-1"},
        {"redisHost": HOST, "queueDepth": "1.5"},
        {"redisHost": HOST, "concurrency": "x"},
        {"redisHost": HOST, "enableTLS": "maybe"},
        {"redisHost": HOST, "redisType": "cluster"},
        {"redisHost": HOST, "streamTTL": "30 days"},
    ],
    ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()) or "empty",
)
def test_bad_metadata_is_refused(metadata: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(PubSubError, match="pubsub test"):
        RedisBroker.from_component(component("pubsub.redis", metadata, name="test"))
    with pytest.raises(PubSubInitError):
        construct(component("pubsub.redis", metadata), tmp_path)


async def test_init_fails_when_redis_is_unreachable() -> None:
    broker = RedisBroker.from_component(
        component("pubsub.redis", {"redisHost": f"127.0.0.1:{free_port()}"})
    )
    with pytest.raises(PubSubError, match=r"redis at 127\.0\.0\.1"):
        await broker.init()
    await broker.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with private_redis(tmp_path) as started:
        yield started


def blocked_readers(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c["cmd"] == "xreadgroup")


async def test_publish_fails_while_redis_is_down_and_delivery_resumes(
    server: ServerProcess,
) -> None:
    topic, inbox = unique_topic(), Inbox()
    async with opened({**FAST, **server.metadata}) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), inbox)
        await broker.publish(PublishRequest(topic, b"before"))
        await settle(lambda: inbox.acked == [b"before"])
        await trio.to_thread.run_sync(server.stop)
        with pytest.raises(PubSubError):
            await broker.publish(PublishRequest(topic, b"lost"))
        await trio.to_thread.run_sync(server.start)
        await broker.publish(PublishRequest(topic, b"after"))
        await settle(lambda: inbox.acked == [b"before", b"after"])
        nursery.cancel_scope.cancel()


async def test_a_cancelled_subscription_stops_reading_at_once(server: ServerProcess) -> None:
    """Its blocked XREADGROUP ends with it, so no entry is handed to a consumer that is gone."""
    topic = unique_topic()
    client = redis.Redis(port=server.port)
    async with opened({"redisHost": f"127.0.0.1:{server.port}"}) as broker:
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "g"), Inbox())
            await settle(lambda: blocked_readers(client) == 1)
            nursery.cancel_scope.cancel()
        await settle(lambda: blocked_readers(client) == 0)
        await broker.publish(PublishRequest(topic, b"for the next member"))
    assert pending(client, topic, "g") == 0
    client.close()
