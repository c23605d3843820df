"""One suite, every broker, through real sidecars: nothing lost to a SIGKILL or a broker restart,
dead letters, drops, expiry, groups, big messages and order."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.integration.harness import H1Client
from tests.integration.sidecars import sidecar
from tests.integration.test_process import free_port
from tests.integration.test_sidecar_process import get, sidecar_process
from tests.integration.test_state_api import call, component, resources
from tests.pubsub.apps import Received, SubscriberApp, subscriber_app
from tests.pubsub.brokers import BrokerFactory, big_message_server, unique_topic
from tests.state.stores import wait_until

JSON = [("content-type", "application/json")]
DEADLINE = 60  # seconds; redelivery after a crash waits out the broker's ack timeout


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def broker_flags(
    factory: BrokerFactory, tmp_path: Path, metadata: dict[str, str] | None = None
) -> tuple[str, str]:
    """--resources-path for a directory holding the `pubsub` Component of this broker."""
    meta = {**factory.metadata(tmp_path), **(metadata or {})}
    where = tmp_path / uid("resources")
    return resources(where, component("pubsub", factory.type, **meta))


def route(topic: str, path: str, **more: object) -> dict[str, object]:
    return {"pubsubname": "pubsub", "topic": topic, "route": path, **more}


def unique_events(app: SubscriberApp, path: str) -> set[object]:
    return {r.event["id"] for r in app.on(path)}


async def publish(port: int, topic: str, body: bytes, query: str = "") -> int:
    target = f"/v1.0/publish/pubsub/{topic}{query}"
    reply = await call(port, "POST", target, body, [("content-type", "application/json")])
    return reply.status


@asynccontextmanager
async def subscribed(
    app: SubscriberApp, app_id: str, tmp_path: Path, flags: tuple[str, ...]
) -> AsyncIterator[int]:
    """An in-process sidecar for `app`, its subscriptions running; yields its HTTP port."""
    async with subscriber_app(app) as app_port:
        async with sidecar(app_id, app_port, tmp_path / app_id, *flags) as running:
            assert running.app.sidecar is not None
            with trio.fail_after(DEADLINE):
                await running.app.sidecar.subscriber.running.wait()
            yield running.port("dapr-http")


# --- in-process sidecars, every broker -----------------------------------------------------------


async def test_dead_letter_after_retries(factory: BrokerFactory, tmp_path: Path) -> None:
    topic, dead = unique_topic("work"), unique_topic("dead")
    resiliency = (
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n"
        "  policies:\n    retries:\n"
        "      twice: {policy: constant, duration: 10ms, maxRetries: 2}\n"
        "  targets:\n    components:\n      pubsub: {inbound: {retry: twice}}\n"
    )
    flags = broker_flags(factory, tmp_path)
    (Path(flags[1]) / "resiliency.yaml").write_text(resiliency)

    def answer(received: Received) -> tuple[int, object]:
        return (503, None) if received.path == "/fails" else (200, None)

    app = SubscriberApp(
        [route(topic, "/fails", deadLetterTopic=dead), route(dead, "/dead")], answer
    )
    async with subscribed(app, uid("app"), tmp_path, flags) as port:
        assert await publish(port, topic, b'{"n":1}') == 204
        await app.wait_for(lambda: len(app.on("/dead")) == 1, DEADLINE)
    assert len(app.on("/fails")) == 3
    assert app.on("/dead")[0].event["topic"] == topic


async def test_drop_is_acknowledged_and_dead_lettered(
    factory: BrokerFactory, tmp_path: Path
) -> None:
    topic, dead = unique_topic("drop"), unique_topic("dead")

    def answer(received: Received) -> tuple[int, object]:
        return (200, {"status": "DROP"}) if received.path == "/drop" else (200, None)

    app = SubscriberApp([route(topic, "/drop", deadLetterTopic=dead), route(dead, "/dead")], answer)
    async with subscribed(app, uid("app"), tmp_path, broker_flags(factory, tmp_path)) as port:
        assert await publish(port, topic, b'{"n":1}') == 204
        await app.wait_for(lambda: len(app.on("/dead")) == 1, DEADLINE)
    assert len(app.on("/drop")) == 1, "a dropped message is not redelivered"


async def test_expired_messages_are_not_delivered(
    shared_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Published with a 1 s TTL while the app is away: when it comes back, a later message
    arrives and the expired one never does (the runtime drops it, or the broker discards it)."""
    topic, app_id = unique_topic("ttl"), uid("app")
    flags = broker_flags(shared_factory, tmp_path)
    app = SubscriberApp([route(topic, "/t", metadata={"concurrency": "1"})])
    async with subscribed(app, app_id, tmp_path, flags):
        pass  # the app's consumer group now exists
    async with sidecar(uid("publisher"), None, tmp_path / "publisher", *flags) as publisher:
        port = publisher.port("dapr-http")
        assert await publish(port, topic, b'{"late":true}', "?metadata.ttlInSeconds=1") == 204
        await trio.sleep_until(trio.current_time() + 1.2)  # the condition is the clock itself
        assert await publish(port, topic, b'{"late":false}') == 204
    async with subscriber_app(app) as app_port:
        async with sidecar(app_id, app_port, tmp_path / app_id, *flags) as running:
            await app.wait_for(lambda: len(app.on("/t")) >= 1, DEADLINE)
            assert running.app.sidecar is not None
            render = running.app.sidecar.metrics.render
            if not shared_factory.native_ttl:  # the runtime saw it expired, and dropped it
                with trio.fail_after(DEADLINE):
                    await wait_until(lambda: 'process_status="drop"' in render())
            metrics = render()
    assert [r.event["data"] for r in app.on("/t")] == [{"late": False}]
    if shared_factory.native_ttl:  # the broker discarded it: the runtime never saw it
        assert 'process_status="drop"' not in metrics


async def test_a_one_megabyte_message_arrives_whole(factory: BrokerFactory, tmp_path: Path) -> None:
    topic = unique_topic("big")
    blob = "x" * (1024 * 1024)
    app = SubscriberApp([route(topic, "/big")])
    with big_message_server(factory, tmp_path) as server:
        flags = broker_flags(factory, tmp_path, server)
        async with subscribed(app, uid("app"), tmp_path, flags) as port:
            body = json.dumps({"blob": blob}).encode()
            assert await publish(port, topic, body) == 204
            await app.wait_for(lambda: len(app.on("/big")) == 1, DEADLINE)
    assert app.on("/big")[0].event["data"] == {"blob": blob}


async def test_one_subscriber_sees_publish_order(
    ordered_factory: BrokerFactory, tmp_path: Path
) -> None:
    factory = ordered_factory
    topic = unique_topic("order")
    app = SubscriberApp([route(topic, "/o", metadata={"concurrency": "1"})])
    async with subscribed(app, uid("app"), tmp_path, broker_flags(factory, tmp_path)) as port:
        for i in range(50):
            assert await publish(port, topic, json.dumps({"i": i}).encode()) == 204
        await app.wait_for(lambda: len(unique_events(app, "/o")) == 50, DEADLINE)
    order = [r.event["data"] for r in app.on("/o")]
    assert order == [{"i": i} for i in range(50)]


async def test_two_instances_of_one_app_share_the_load(
    shared_factory: BrokerFactory, tmp_path: Path
) -> None:
    topic, app_id = unique_topic("load"), uid("workers")
    first = SubscriberApp([route(topic, "/w")], delay=0.01)
    second = SubscriberApp([route(topic, "/w")], delay=0.01)
    flags = broker_flags(shared_factory, tmp_path)
    async with subscriber_app(first) as p1, subscriber_app(second) as p2:
        async with (
            sidecar(app_id, p1, tmp_path / "one", *flags) as one,
            sidecar(app_id, p2, tmp_path / "two", *flags) as two,
        ):
            for running in (one, two):
                assert running.app.sidecar is not None
                with trio.fail_after(DEADLINE):
                    await running.app.sidecar.subscriber.running.wait()
            port = one.port("dapr-http")
            for i in range(60):
                assert await publish(port, topic, json.dumps({"i": i}).encode()) == 204
            await eventually(
                lambda: len(unique_events(first, "/w") | unique_events(second, "/w")) == 60
            )
    assert unique_events(first, "/w"), "the second instance took every message"
    assert unique_events(second, "/w"), "the first instance took every message"


async def test_two_apps_each_receive_everything(
    shared_factory: BrokerFactory, tmp_path: Path
) -> None:
    topic = unique_topic("fanout")
    apps = SubscriberApp([route(topic, "/f")]), SubscriberApp([route(topic, "/f")])
    flags = broker_flags(shared_factory, tmp_path)
    async with subscriber_app(apps[0]) as p1, subscriber_app(apps[1]) as p2:
        async with (
            sidecar(uid("billing"), p1, tmp_path / "one", *flags) as one,
            sidecar(uid("shipping"), p2, tmp_path / "two", *flags) as two,
        ):
            for running in (one, two):
                assert running.app.sidecar is not None
                with trio.fail_after(DEADLINE):
                    await running.app.sidecar.subscriber.running.wait()
            port = one.port("dapr-http")
            for i in range(30):
                assert await publish(port, topic, json.dumps({"i": i}).encode()) == 204
            await eventually(lambda: all(len(unique_events(a, "/f")) == 30 for a in apps))


async def eventually(condition: Callable[[], bool], deadline: float = DEADLINE) -> None:
    with trio.fail_after(deadline):
        await wait_until(condition)


# --- sidecar processes: crashes and broker restarts lose nothing ----------------------------------


async def wait_subscribed(port: int, count: int) -> None:
    """Until the sidecar's /v1.0/metadata lists `count` running subscriptions."""
    with trio.fail_after(DEADLINE):
        while True:
            reply = await get(port, "/v1.0/metadata")
            if (
                reply.status == 200
                and len(json.loads(reply.body).get("subscriptions", [])) >= count
            ):
                return
            await trio.sleep(0.05)


async def publish_with_retries(client_port: int, topic: str, body: bytes) -> None:
    """Publish until the broker accepts it (it may be restarting): every call counted as sent
    got a 204."""
    with trio.fail_after(DEADLINE):
        while True:
            try:
                async with H1Client.connect(client_port) as client:
                    reply = await client.request(
                        "POST", f"/v1.0/publish/pubsub/{topic}", JSON, body
                    )
            except OSError:
                reply = None
            if reply is not None and reply.status == 204:
                return
            await trio.sleep(0.1)


async def test_a_sidecar_killed_mid_delivery_loses_nothing(
    shared_durable_factory: BrokerFactory, tmp_path: Path
) -> None:
    topic, app_id, total = unique_topic("crash"), uid("consumer"), 200
    app = SubscriberApp([route(topic, "/c")], delay=0.01)
    flags = broker_flags(shared_durable_factory, tmp_path)
    pub_port, sub_port = free_port(), free_port()
    async with subscriber_app(app) as app_port:
        sub_args = ("--app-port", str(app_port), *flags)
        async with sidecar_process(uid("producer"), tmp_path / "p", pub_port, *flags):
            async with sidecar_process(app_id, tmp_path / "s", sub_port, *sub_args) as victim:
                await wait_subscribed(sub_port, 1)
                for i in range(total):
                    await publish_with_retries(pub_port, topic, json.dumps({"i": i}).encode())
                    if i == total // 4:
                        await app.wait_for(lambda: len(app.on("/c")) >= 10, DEADLINE)
                        victim.send_signal(signal.SIGKILL)
                        await victim.wait()
            async with sidecar_process(app_id, tmp_path / "s", sub_port, *sub_args):
                await wait_subscribed(sub_port, 1)
                await eventually(lambda: len(unique_events(app, "/c")) == total)
    seen = {json.dumps(r.event["data"]) for r in app.on("/c")}
    assert seen == {json.dumps({"i": i}) for i in range(total)}


async def test_a_broker_restarted_mid_stream_loses_nothing(
    restartable_factory: BrokerFactory, tmp_path: Path
) -> None:
    assert restartable_factory.private is not None
    topic, total = unique_topic("restart"), 100
    app = SubscriberApp([route(topic, "/r")])
    pub_port, sub_port = free_port(), free_port()
    with restartable_factory.private(tmp_path / "broker") as server:
        flags = broker_flags(restartable_factory, tmp_path, server.metadata)
        async with subscriber_app(app) as app_port:
            sub_args = ("--app-port", str(app_port), *flags)
            async with (
                sidecar_process(uid("producer"), tmp_path / "p", pub_port, *flags),
                sidecar_process(uid("consumer"), tmp_path / "s", sub_port, *sub_args),
            ):
                await wait_subscribed(sub_port, 1)
                for i in range(total):
                    if i == total // 2:
                        await trio.to_thread.run_sync(server.restart)
                    await publish_with_retries(pub_port, topic, json.dumps({"i": i}).encode())
                await eventually(lambda: len(unique_events(app, "/r")) == total, DEADLINE * 2)
