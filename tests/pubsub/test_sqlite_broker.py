"""The SQLite broker beyond the conformance suite: metadata, the file, leases, TTL, cleanup."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
import trio

from filters.pubsub.broker import Message, PublishRequest, PubSubError, SubscribeRequest
from filters.pubsub.registry import PubSubInitError, construct
from filters.pubsub.sqlite import SqliteBroker
from tests.pubsub.brokers import component, unique_topic
from tests.state.stores import wait_until

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30


def from_meta(data_dir: Path, **metadata: str) -> SqliteBroker:
    broker = construct(component("pubsub.sqlite", metadata), data_dir)
    assert isinstance(broker, SqliteBroker)
    return broker


@asynccontextmanager
async def opened(broker: SqliteBroker) -> AsyncIterator[SqliteBroker]:
    await broker.init()
    try:
        yield broker
    finally:
        await broker.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Inbox:
    """Records what arrives; stalls (holding the message) when told to."""

    def __init__(self, *, stall: bool = False) -> None:
        self.received: list[bytes] = []
        self.stall = stall

    async def __call__(self, message: Message) -> None:
        self.received.append(message.data)
        if self.stall:
            await trio.sleep_forever()


def rows(database: Path, table: str) -> int:
    with closing(sqlite3.connect(database)) as conn:
        count: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count


async def create_group(broker: SqliteBroker, topic: str, group: str) -> None:
    """Subscribe and leave at once: the group exists and collects messages from now on."""
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, group), Inbox())
        nursery.cancel_scope.cancel()


async def publish(broker: SqliteBroker, topic: str, *payloads: bytes, **metadata: str) -> None:
    for data in payloads:
        await broker.publish(PublishRequest(topic, data, "application/json", metadata))


def test_defaults(tmp_path: Path) -> None:
    broker = from_meta(tmp_path / "data")
    assert broker.database == str(tmp_path / "data" / "pubsub.db")
    assert broker.table_prefix == "pubsub_"
    assert (broker.processing_timeout, broker.poll_interval) == (60.0, 0.1)
    assert broker.retention is None


def test_metadata_is_mapped(tmp_path: Path) -> None:
    broker = from_meta(
        tmp_path,
        connectionString=str(tmp_path / "elsewhere.db"),
        tablePrefix="app1_",
        processingTimeout="90s",
        pollInterval="250ms",
        retentionPeriod="24h",
        cleanupInterval="5",
        busyTimeout="3s",
    )
    assert broker.database == str(tmp_path / "elsewhere.db")
    assert broker.table_prefix == "app1_"
    assert (broker.processing_timeout, broker.poll_interval) == (90.0, 0.25)
    assert (broker.retention, broker.cleanup_interval, broker.busy_timeout) == (86400.0, 5.0, 3.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("processingTimeout", "soon"),
        ("processingTimeout", "0"),
        ("pollInterval", "-1"),
        ("retentionPeriod", "forever"),
        ("tablePrefix", "x; DROP TABLE y"),
    ],
)
def test_bad_metadata_is_refused_at_construction(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(PubSubInitError, match=key):
        from_meta(tmp_path, **{key: value})
    with pytest.raises(PubSubError, match=key):
        SqliteBroker.from_component(
            component("pubsub.sqlite", {key: value}, name="p"), data_dir=tmp_path
        )


async def test_an_unusable_file_fails_init(tmp_path: Path) -> None:
    broker = from_meta(tmp_path, connectionString=str(tmp_path))  # a directory
    with pytest.raises(PubSubError, match=str(tmp_path)):
        await broker.init()


async def test_use_before_init_is_a_pubsub_error(tmp_path: Path) -> None:
    with pytest.raises(PubSubError, match="init"):
        await from_meta(tmp_path).publish(PublishRequest("t", b"{}"))


async def test_the_default_file_is_created_in_the_data_dir_in_wal_mode(tmp_path: Path) -> None:
    async with opened(from_meta(tmp_path / "data")) as broker:
        await create_group(broker, "orders", "app")
    database = tmp_path / "data" / "pubsub.db"
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert rows(database, "pubsub_groups") == 1


async def test_groups_start_when_created_and_keep_collecting(tmp_path: Path) -> None:
    database = tmp_path / "pubsub.db"
    topic = unique_topic()
    async with opened(from_meta(tmp_path)) as broker:
        await publish(broker, topic, b"0")  # nobody subscribed: dropped, like Dapr's brokers
        await create_group(broker, topic, "early")
        await publish(broker, topic, b"1")
        await create_group(broker, topic, "late")
        await publish(broker, topic, b"2")
        assert (rows(database, "pubsub_messages"), rows(database, "pubsub_deliveries")) == (2, 3)
        early, late = Inbox(), Inbox()
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "early"), early)
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "late"), late)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(early.received) == 2 and len(late.received) == 1)
            nursery.cancel_scope.cancel()
    assert early.received == [b"1", b"2"]
    assert late.received == [b"2"]


async def test_a_message_is_deleted_once_every_group_acknowledged_it(tmp_path: Path) -> None:
    database = tmp_path / "pubsub.db"
    topic = unique_topic()
    sent = [str(i).encode() for i in range(10)]
    first, second = Inbox(), Inbox()
    async with opened(from_meta(tmp_path)) as broker:
        await create_group(broker, topic, "second")
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "first", 3), first)
            await publish(broker, topic, *sent)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(first.received) == len(sent))
            nursery.cancel_scope.cancel()  # acknowledgements finish before the nursery exits
        assert (rows(database, "pubsub_messages"), rows(database, "pubsub_deliveries")) == (10, 10)
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "second", 3), second)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(second.received) == len(sent))
            nursery.cancel_scope.cancel()
    assert (rows(database, "pubsub_messages"), rows(database, "pubsub_deliveries")) == (0, 0)
    assert sorted(first.received) == sorted(second.received) == sorted(sent)


async def test_two_brokers_on_one_file_hand_over_after_the_lease(tmp_path: Path) -> None:
    """Like two sidecars: a member that holds a message past processingTimeout loses it."""
    topic = unique_topic()
    stuck, rescuer = Inbox(stall=True), Inbox()
    meta = {"processingTimeout": "500ms", "pollInterval": "20ms"}
    async with opened(from_meta(tmp_path, **meta)) as a, opened(from_meta(tmp_path, **meta)) as b:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, SubscribeRequest(topic, "app"), stuck)
            await publish(a, topic, b"only")
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: bool(stuck.received))
                await nursery.start(b.subscribe, SubscribeRequest(topic, "app"), rescuer)
                await wait_until(lambda: bool(rescuer.received))
            nursery.cancel_scope.cancel()
    assert stuck.received == rescuer.received == [b"only"]
    assert rows(tmp_path / "pubsub.db", "pubsub_deliveries") == 0


async def test_a_cancelled_delivery_is_released_without_waiting_for_the_lease(
    tmp_path: Path,
) -> None:
    topic = unique_topic()
    stuck, rescuer = Inbox(stall=True), Inbox()
    meta = {"processingTimeout": "1h", "pollInterval": "20ms"}
    async with opened(from_meta(tmp_path, **meta)) as a, opened(from_meta(tmp_path, **meta)) as b:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, SubscribeRequest(topic, "app", 3), stuck)
            await publish(a, topic, b"1", b"2", b"3")
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(stuck.received) == 3)
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            await nursery.start(b.subscribe, SubscribeRequest(topic, "app", 3), rescuer)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: len(rescuer.received) == 3)
            nursery.cancel_scope.cancel()
    assert sorted(rescuer.received) == [b"1", b"2", b"3"]


async def test_expired_messages_are_never_delivered(tmp_path: Path) -> None:
    database = tmp_path / "pubsub.db"
    clock = Clock()
    topic = unique_topic()
    inbox = Inbox()
    broker = SqliteBroker(database, clock=clock)
    async with opened(broker):
        await create_group(broker, topic, "app")
        await publish(broker, topic, b"short", ttlInSeconds="5")
        await publish(broker, topic, b"long", ttlInSeconds="60")
        clock.now += 10
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, "app"), inbox)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: bool(inbox.received))
            nursery.cancel_scope.cancel()
    assert inbox.received == [b"long"]  # in publish order: "short" would have come first
    assert (rows(database, "pubsub_messages"), rows(database, "pubsub_deliveries")) == (0, 0)


async def test_cleanup_deletes_expired_and_retained_too_long(tmp_path: Path) -> None:
    database = tmp_path / "pubsub.db"
    clock = Clock()
    topic = unique_topic()
    broker = SqliteBroker(database, clock=clock, retention=3600)
    async with opened(broker):
        await create_group(broker, topic, "gone")
        await publish(broker, topic, b"ttl", ttlInSeconds="5")
        await publish(broker, topic, b"old")
        clock.now += 10
        assert await broker.cleanup() == 1
        clock.now += 3600
        await publish(broker, topic, b"new")
        assert await broker.cleanup() == 1
    assert (rows(database, "pubsub_messages"), rows(database, "pubsub_deliveries")) == (1, 1)


async def test_concurrent_publishes_are_each_stored_once(tmp_path: Path) -> None:
    database = tmp_path / "pubsub.db"
    topic = unique_topic()
    sent = {str(i).encode() for i in range(100)}
    async with opened(from_meta(tmp_path)) as broker:
        await create_group(broker, topic, "app")
        async with trio.open_nursery() as nursery:
            for data in sent:
                nursery.start_soon(publish, broker, topic, data)
    with closing(sqlite3.connect(database)) as conn:
        stored = [bytes(data) for (data,) in conn.execute("SELECT data FROM pubsub_messages")]
    assert sorted(stored) == sorted(sent)
    assert rows(database, "pubsub_deliveries") == len(sent)


@pytest.mark.parametrize("ttl", ["soon", "0", "-3"])
async def test_a_bad_ttl_is_refused(tmp_path: Path, ttl: str) -> None:
    async with opened(from_meta(tmp_path)) as broker:
        with pytest.raises(PubSubError, match="ttlInSeconds"):
            await publish(broker, "t", b"{}", ttlInSeconds=ttl)


async def test_a_one_megabyte_binary_message_round_trips_byte_for_byte(tmp_path: Path) -> None:
    topic = unique_topic()
    big = bytes(range(256)) * 4096
    inbox = Inbox()
    async with opened(from_meta(tmp_path)) as broker, trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "app"), inbox)
        await publish(broker, topic, big, custom="header")
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: bool(inbox.received))
        nursery.cancel_scope.cancel()
    assert inbox.received == [big]


MEMBER = """
import sys, trio
from filters.pubsub.broker import SubscribeRequest
from filters.pubsub.sqlite import SqliteBroker

async def main(database, topic):
    broker = SqliteBroker(database, processing_timeout=0.5, poll_interval=0.02)
    await broker.init()

    async def handler(message):
        print("got", message.data.decode(), flush=True)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "app"), handler)
        print("ready", flush=True)

trio.run(main, *sys.argv[1:])
"""


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


async def test_a_killed_process_leaves_its_message_to_the_group(tmp_path: Path) -> None:
    """A sidecar SIGKILLed mid-delivery: the lease runs out and another member gets it."""
    database = tmp_path / "pubsub.db"
    topic = unique_topic()
    inbox = Inbox()
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", MEMBER, str(database), topic],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert process.stdout is not None
            assert await read_line(process.stdout) == "ready"
            async with opened(SqliteBroker(database, poll_interval=0.02)) as broker:
                await publish(broker, topic, b"held")
                assert await read_line(process.stdout) == "got held"
                process.send_signal(signal.SIGKILL)
                await process.wait()
                async with trio.open_nursery() as nursery:
                    await nursery.start(broker.subscribe, SubscribeRequest(topic, "app"), inbox)
                    await wait_until(lambda: bool(inbox.received))
                    nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert inbox.received == [b"held"]
