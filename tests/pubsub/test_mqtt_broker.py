"""pubsub.mqtt3 against a real Mosquitto: shared subscriptions, resumed sessions, metadata."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion

from filters.pubsub.broker import Broker, Message, PublishRequest, PubSubError, SubscribeRequest
from filters.pubsub.mqtt import MqttBroker, session_client_id
from filters.pubsub.registry import PubSubInitError, construct
from tests.pubsub.backends.mqtt import FACTORY, SHARED_URL, running_mosquitto
from tests.pubsub.brokers import component, free_port, open_broker, unique_topic
from tests.state.stores import wait_until

DEADLINE = 30
SHARED_ADDRESS = "127.0.0.1:1883"

# A sidecar of its own: subscribes, says "got" when the message arrives, and stalls on it.
STALLING_SUBSCRIBER = """
import sys, trio
from filters.pubsub.broker import SubscribeRequest
from filters.pubsub.mqtt import MqttBroker
from tests.pubsub.brokers import component

async def main(url, topic, group):
    broker = MqttBroker.from_component(component("pubsub.mqtt3", {"url": url}))
    await broker.init()
    async def stall(message):
        print("got", flush=True)
        await trio.sleep_forever()
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.subscribe, SubscribeRequest(topic, group, 1), stall)
        print("ready", flush=True)

trio.run(main, *sys.argv[1:])
"""


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    FACTORY.require()


class Recorder:
    """A handler that keeps what it got; `stall` keeps every call from returning."""

    def __init__(self, *, stall: bool = False) -> None:
        self.acked: list[bytes] = []
        self.received: list[Message] = []
        self.stall = stall

    async def __call__(self, message: Message) -> None:
        self.received.append(message)
        if self.stall:
            await trio.sleep_forever()
        self.acked.append(message.data)


def erase_sessions(address: str, client_ids: list[str]) -> None:
    """Connect each id with a clean session, which discards what the broker kept for it."""
    host, port = address.rsplit(":", 1)
    for client_id in client_ids:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.connect(host, int(port))
        client.loop_start()
        client.disconnect()
        client.loop_stop()


@asynccontextmanager
async def sessions_erased(
    group: str, topic: str, count: int, address: str = SHARED_ADDRESS
) -> AsyncIterator[None]:
    """Discard, afterwards, the persistent sessions of `count` subscribers of `group`."""
    try:
        yield
    finally:
        ids = [session_client_id(address, group, topic, n) for n in range(count)]
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(erase_sessions, address, ids)


async def publish(broker: Broker, topic: str, payloads: list[bytes]) -> None:
    for data in payloads:
        await broker.publish(PublishRequest(topic, data))


def payloads(n: int) -> list[bytes]:
    return [f"m{i}".encode() for i in range(n)]


async def test_a_group_shares_and_another_group_gets_everything(tmp_path: Path) -> None:
    topic, sent = unique_topic("mqtt"), payloads(40)
    first, second, other = Recorder(), Recorder(), Recorder()
    async with (
        sessions_erased("workers", topic, 2),
        sessions_erased("audit", topic, 1),
        open_broker(FACTORY, tmp_path) as a,
        open_broker(FACTORY, tmp_path) as b,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(a.subscribe, SubscribeRequest(topic, "workers", 1), first)
        await nursery.start(b.subscribe, SubscribeRequest(topic, "workers", 1), second)
        await nursery.start(b.subscribe, SubscribeRequest(topic, "audit", 1), other)
        await publish(a, topic, sent)
        with trio.fail_after(DEADLINE):
            await wait_until(
                lambda: len(first.acked) + len(second.acked) >= 40 and len(other.acked) >= 40
            )
        nursery.cancel_scope.cancel()
    assert first.acked, "the second member took every message"
    assert second.acked, "the first member took every message"
    assert Counter(first.acked + second.acked) == Counter(sent)
    assert sorted(other.acked) == sorted(sent)


async def test_content_type_does_not_travel_but_retained_does(tmp_path: Path) -> None:
    topic, inbox = unique_topic("mqtt"), Recorder()
    async with (
        sessions_erased("g", topic, 1),
        open_broker(FACTORY, tmp_path) as broker,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(broker.subscribe, SubscribeRequest(topic, "g", 1), inbox)
        await broker.publish(PublishRequest(topic, b"{}", "application/json", {"k": "v"}))
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: len(inbox.acked) == 1)
        nursery.cancel_scope.cancel()
    assert inbox.received[0].content_type is None
    assert dict(inbox.received[0].metadata) == {"retained": "false"}


async def _read_until(stream: trio.abc.ReceiveStream, word: bytes, seen: bytearray) -> None:
    while word not in seen.split(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"the subscriber exited before saying {word!r}: {bytes(seen)!r}")
        seen += chunk


async def test_a_killed_sidecar_s_message_comes_back_to_its_successor(tmp_path: Path) -> None:
    """The subscriber process dies (SIGKILL) holding an unacknowledged message; the next
    subscriber of the group on this host takes the same client id and gets it again."""
    topic, group, inbox = unique_topic("mqtt"), "killed", Recorder()
    command = [sys.executable, "-c", STALLING_SUBSCRIBER, SHARED_URL, topic, group]
    async with sessions_erased(group, topic, 1), open_broker(FACTORY, tmp_path) as broker:
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        assert process.stdout is not None
        try:
            seen = bytearray()
            with trio.fail_after(DEADLINE):
                await _read_until(process.stdout, b"ready", seen)
                await publish(broker, topic, [b"precious"])
                await _read_until(process.stdout, b"got", seen)
        finally:
            process.kill()
            await process.wait()
            await process.stdout.aclose()
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.subscribe, SubscribeRequest(topic, group, 1), inbox)
            with trio.fail_after(DEADLINE):
                await wait_until(lambda: inbox.acked == [b"precious"])
            nursery.cancel_scope.cancel()


async def test_an_offline_member_keeps_its_share_until_it_returns(tmp_path: Path) -> None:
    """Mosquitto goes on queueing a share of a group's messages for a member whose persistent
    session is offline: they are not lost, but wait for that member (that client id)."""
    topic, sent = unique_topic("mqtt"), payloads(10)
    live, away, back = Recorder(), Recorder(), Recorder()
    async with (
        sessions_erased("pool", topic, 2),
        open_broker(FACTORY, tmp_path) as a,
        open_broker(FACTORY, tmp_path) as b,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(a.subscribe, SubscribeRequest(topic, "pool", 1), live)
        async with trio.open_nursery() as member:
            await member.start(b.subscribe, SubscribeRequest(topic, "pool", 1), away)
            member.cancel_scope.cancel()
        await publish(a, topic, sent)
        await nursery.start(b.subscribe, SubscribeRequest(topic, "pool", 1), back)
        with trio.fail_after(DEADLINE):
            await wait_until(lambda: set(live.acked + back.acked) >= set(sent))
        nursery.cancel_scope.cancel()
    assert back.acked, "Mosquitto gave every message to the live member"


async def test_publishing_fails_while_the_broker_is_down_and_recovers(tmp_path: Path) -> None:
    topic = unique_topic("mqtt")
    with running_mosquitto(tmp_path) as server:
        async with open_broker(FACTORY, tmp_path, server.metadata) as broker:
            await broker.publish(PublishRequest(topic, b"before"))
            await trio.to_thread.run_sync(server.stop)
            with trio.fail_after(DEADLINE):
                await wait_until_publish_fails(broker, topic)
            await trio.to_thread.run_sync(server.start)
            with trio.fail_after(DEADLINE):
                while True:
                    try:
                        await broker.publish(PublishRequest(topic, b"after"))
                        break
                    except PubSubError:
                        await trio.sleep(0.1)


async def wait_until_publish_fails(broker: Broker, topic: str) -> None:
    while True:
        try:
            await broker.publish(PublishRequest(topic, b"during"))
        except PubSubError:
            return
        await trio.sleep(0.05)


async def test_init_fails_when_nothing_listens(tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionRefusedError):
        async with open_broker(FACTORY, tmp_path, {"url": url}):
            pass


def _metadata_cases() -> Iterator[tuple[dict[str, str], str]]:
    yield {}, "metadata url: required"
    yield {"url": "ws://127.0.0.1:1883"}, "metadata url: scheme 'ws'"
    yield {"url": "tcp://:1883"}, "metadata url: no host"
    yield {"url": "tcp://127.0.0.1:99999"}, "metadata url: Port out of range"
    yield {"url": SHARED_URL, "qos": "3"}, "metadata qos: expected 0, 1 or 2"
    yield {"url": SHARED_URL, "qos": "one"}, "metadata qos: expected an integer"
    yield {"url": SHARED_URL, "cleanSession": "yes"}, "metadata cleanSession: expected true"
    yield {"url": SHARED_URL, "retain": "maybe"}, "metadata retain: expected true"
    yield {"url": SHARED_URL, "caCert": "x"}, "need an ssl:// url"
    yield {"url": "ssl://127.0.0.1", "caCert": "not pem"}, "metadata caCert: not a PEM"
    yield {"url": "ssl://127.0.0.1", "clientCert": "c"}, "metadata clientKey: clientCert needs"
    yield {"url": "ssl://127.0.0.1", "clientCert": "c", "clientKey": "k"}, "metadata clientCert:"


@pytest.mark.parametrize(("metadata", "reason"), list(_metadata_cases()))
def test_metadata_errors(metadata: dict[str, str], reason: str, tmp_path: Path) -> None:
    with pytest.raises(PubSubError, match=reason):
        MqttBroker.from_component(component("pubsub.mqtt3", metadata))
    with pytest.raises(PubSubInitError, match=reason):
        construct(component("pubsub.mqtt3", metadata), tmp_path)


async def test_a_publish_may_override_retain(tmp_path: Path) -> None:
    topic = unique_topic("mqtt")
    async with open_broker(FACTORY, tmp_path) as broker:
        with pytest.raises(PubSubError, match="retain"):
            await broker.publish(PublishRequest(topic, b"x", metadata={"retain": "perhaps"}))
        await broker.publish(PublishRequest(topic, b"kept", metadata={"retain": "true"}))
        await broker.publish(PublishRequest(topic, b"", metadata={"retain": "true"}))  # clears it
