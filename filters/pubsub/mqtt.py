"""`pubsub.mqtt3`: MQTT 3.1.1 pub/sub on paho-mqtt, consumer groups as shared subscriptions."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import logging
import math
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from config.dapr.component import Component
from filters.pubsub.broker import (
    Feature,
    Handler,
    Message,
    PublishRequest,
    PubSubError,
    SubscribeRequest,
)
from filters.pubsub.mqtt_settings import MqttSettings, parse

__all__ = ["MqttBroker", "session_client_id"]

log = logging.getLogger("meshwire.pubsub")

PUBLISH_TIMEOUT = 20.0  # seconds for the broker to confirm a publish (Dapr's defaultWait)
CONNECT_TIMEOUT = 10.0  # seconds for the first CONNACK in init
REDELIVERY_DELAY = 0.1  # seconds before a message the app did not take is offered again
KEEPALIVE = 30  # seconds


def _new_client(settings: MqttSettings, client_id: str, *, subscriber: bool) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=settings.clean_session or not subscriber,
        protocol=mqtt.MQTTv311,
        manual_ack=subscriber,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        client.tls_set_context(settings.tls)
    client.reconnect_delay_set(1, 5)
    return client


def _share_name(group: str) -> str:
    """The group as a share name: `/`, `+` and `#` are not allowed there (escaped, reversibly)."""
    for char in "%/+#":
        group = group.replace(char, f"%{ord(char):02X}")
    return group


class _Bridge:
    """Runs a function on the trio thread on behalf of paho's network thread."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()

    def __call__(self, function: Callable[..., object], *args: object) -> None:
        # Called from paho's thread, where an exception would end its network loop.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(function, *args)


async def _stop(client: mqtt.Client) -> None:
    """Disconnect (a persistent session keeps its unacked messages) and join paho's thread."""

    def stop() -> None:
        client.disconnect()
        client.loop_stop()

    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(stop)


@contextlib.contextmanager
def _instance_number(key: str) -> Iterator[int]:
    """The lowest number for `key` that no other live subscriber on this host holds: a flock
    per number, released when the subscription ends or its process dies."""
    directory = Path(tempfile.gettempdir(), f"meshwire-mqtt-{os.getuid()}")
    directory.mkdir(mode=0o700, exist_ok=True)
    number = 0
    while True:
        path = directory / f"{key}-{number}.lock"
        fd = _lock(path)
        if fd is None:
            number += 1
            continue
        try:
            yield number
        finally:
            path.unlink(missing_ok=True)  # while locked: whoever opened it meanwhile sees it stale
            os.close(fd)
        return


def _lock(path: Path) -> int | None:
    """A descriptor holding the flock on `path`, or None when another holder has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The holder we waited on may have unlinked the file: then lock the new one instead.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


def session_client_id(address: str, group: str, topic: str, number: int) -> str:
    """The client id of this host's subscriber `number` of `group` to `topic` on the broker at
    `address`: the same after a restart, so a restarted sidecar resumes its session."""
    identity = f"{socket.gethostname()}\0{address}\0{topic}"
    return f"{group}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}-{number}"


@dataclass(slots=True)
class _Pending:
    """A publish waiting for its PUBACK."""

    done: trio.Event
    error: str | None = None


class MqttBroker:
    """Dapr's `pubsub.mqtt3`: one publishing client, one persistent session per subscription.

    Delivery, as MQTT 3.1.1 and Mosquitto 2 allow it:

    - Publishing waits for the broker's PUBACK (QoS 1, the default). Mosquitto acknowledges before
      it writes its persistence file, so a message is as durable as the broker's autosave makes it.
    - A subscription is `$share/<group>/<topic>` on a persistent session (cleanSession false) of
      its own. MQTT has no NACK: a message whose handler failed is retried here, unacknowledged.
    - MQTT 3.1.1 redelivers unacknowledged messages only when the session that received them
      reconnects with the same client id; Mosquitto never hands them to another group member.
      Worse, it goes on queueing a share of new messages for an offline member. So client ids
      are stable: `<group>-<digest of host name, broker and topic>-<n>`, n being the lowest
      number no other live subscriber of this host holds (a lock file). A sidecar restarted on
      the same host name resumes its sessions and gets their messages; one that never returns
      (a replaced pod with a new name) strands them until Mosquitto's persistent_client_expiration.
    - MQTT 3 has no headers: content type and metadata do not travel (`retained` is reported).
    - QoS 2 is used for publishing only; subscriptions use QoS 1, since a QoS 2 message belongs to
      the client once it answered PUBREC and would be lost with a dying subscriber.
    """

    features: frozenset[Feature] = frozenset({Feature.SUBSCRIBE_WILDCARDS})

    def __init__(self, name: str, settings: MqttSettings) -> None:
        self._name = name
        self._settings = settings
        self._client: mqtt.Client | None = None
        self._connected = False
        self._first_connack = trio.Event()
        self._refused: str | None = None
        self._pending: dict[int, _Pending] = {}

    @classmethod
    def from_component(cls, component: Component) -> MqttBroker:
        return cls(component.name, parse(component))

    @property
    def _address(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    async def init(self) -> None:
        bridge = _Bridge()
        client = _new_client(self._settings, f"meshwire-pub-{uuid.uuid4().hex}", subscriber=False)
        client.on_connect = lambda _c, _u, _f, code, _p: bridge(self._on_connect, code)
        client.on_disconnect = lambda _c, _u, _f, _code, _p: bridge(self._on_disconnect)
        client.on_publish = lambda _c, _u, mid, code, _p: bridge(self._on_publish, mid, code)
        settings = self._settings
        await trio.to_thread.run_sync(client.connect, settings.host, settings.port, KEEPALIVE)
        client.loop_start()
        with trio.move_on_after(CONNECT_TIMEOUT):
            await self._first_connack.wait()
        if not self._connected:
            await _stop(client)
            reason = self._refused or f"no answer within {CONNECT_TIMEOUT:g}s"
            raise PubSubError(f"pubsub {self._name}: MQTT broker {self._address}: {reason}")
        self._client = client

    def _on_connect(self, code: ReasonCode) -> None:
        self._connected = not code.is_failure
        self._refused = str(code) if code.is_failure else None
        self._first_connack.set()

    def _on_disconnect(self) -> None:
        self._connected = False
        for pending in self._pending.values():
            pending.error = "connection lost before the broker confirmed the message"
            pending.done.set()

    def _on_publish(self, mid: int, code: ReasonCode) -> None:
        pending = self._pending.get(mid)
        if pending is not None:
            pending.error = str(code) if code.is_failure else None
            pending.done.set()

    async def publish(self, request: PublishRequest) -> None:
        client = self._client
        if client is None or not self._connected:
            raise PubSubError(f"pubsub {self._name}: not connected to {self._address}")
        retain = self._retain(request.metadata)
        try:
            info = client.publish(request.topic, request.data, self._settings.qos, retain)
        except ValueError as exc:  # a topic with wildcards, a payload over 256 MB
            raise PubSubError(f"pubsub {self._name}: cannot publish: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PubSubError(f"pubsub {self._name}: publish failed: {mqtt.error_string(info.rc)}")
        if self._settings.qos == 0:
            await trio.lowlevel.checkpoint()
            return
        # Registered before the first checkpoint: the bridged PUBACK cannot run before this.
        pending = self._pending[info.mid] = _Pending(trio.Event())
        try:
            with trio.move_on_after(PUBLISH_TIMEOUT):
                await pending.done.wait()
        finally:
            del self._pending[info.mid]
        if not pending.done.is_set():
            pending.error = f"not confirmed within {PUBLISH_TIMEOUT:g}s"
        if pending.error is not None:
            raise PubSubError(f"pubsub {self._name}: publish to {request.topic}: {pending.error}")

    def _retain(self, metadata: Mapping[str, str]) -> bool:
        value = metadata.get("retain", "").strip().lower()
        if not value:
            return self._settings.retain
        if value not in ("true", "false", "1", "0"):
            raise PubSubError(f"pubsub {self._name}: metadata retain: expected true or false")
        return value in ("true", "1")

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if not request.topic or not request.group:
            raise PubSubError(f"pubsub {self._name}: a subscription needs a topic and a group")
        first = session_client_id(self._address, request.group, request.topic, 0)
        with _instance_number(hashlib.sha256(first.encode()).hexdigest()[:32]) as number:
            session = _Session(
                self._settings,
                client_id=session_client_id(self._address, request.group, request.topic, number),
                topic_filter=f"$share/{_share_name(request.group)}/{request.topic}",
            )
            await session.run(handler, max(1, request.concurrency), task_status)

    async def aclose(self) -> None:
        if self._client is not None:
            await _stop(self._client)
            self._client = None


@dataclass(frozen=True, slots=True)
class _Delivery:
    message: Message
    mid: int
    qos: int
    connection: int  # which connection brought it: its mid means nothing on a later one


class _Session:
    """One subscription's persistent MQTT session, its client on paho's network thread."""

    def __init__(self, settings: MqttSettings, *, client_id: str, topic_filter: str) -> None:
        self._client = _new_client(settings, client_id, subscriber=True)
        self._settings = settings
        self._client_id = client_id
        self._filter = topic_filter
        self._qos = min(settings.qos, 1)
        self._subscribed = trio.Event()
        self._failed: str | None = None
        self._send, self._receive = trio.open_memory_channel[_Delivery](math.inf)
        self._connection = 0
        self._ack_lock = threading.Lock()

    async def run(
        self, handler: Handler, concurrency: int, task_status: trio.TaskStatus[None]
    ) -> None:
        self._wire(_Bridge())
        self._client.connect_async(self._settings.host, self._settings.port, KEEPALIVE)
        self._client.loop_start()
        try:
            await self._subscribed.wait()
            if self._failed is None:
                task_status.started()
                await self._consume(handler, concurrency)
            raise PubSubError(f"MQTT client {self._client_id}: {self._failed}")
        finally:
            self._send.close()
            await _stop(self._client)

    def _wire(self, bridge: _Bridge) -> None:
        client = self._client
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = lambda _c, _u, message: bridge(self._arrived, message, self._connection)
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: bridge(self._on_suback, codes)

    def _paho_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any
    ) -> None:
        if code.is_failure:
            log.warning("MQTT client %s: connection refused: %s", self._client_id, code)
        else:  # resubscribing: harmless on a resumed session, needed on a new one
            client.subscribe(self._filter, self._qos)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, _code: Any, _p: Any) -> None:
        # paho calls this before it reconnects, and drops unsent packets on reconnect: an ack
        # made after this moment would name a message id of the dead connection.
        with self._ack_lock:
            self._connection += 1

    def _arrived(self, message: mqtt.MQTTMessage, connection: int) -> None:
        retained = {"retained": str(message.retain).lower()}
        delivery = _Delivery(
            Message(message.topic, bytes(message.payload), None, retained),
            message.mid,
            message.qos,
            connection,
        )
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait(delivery)

    def _on_suback(self, codes: list[ReasonCode]) -> None:
        refused = [code for code in codes if code.is_failure]
        if refused:
            self._failed = f"the broker refused subscription {self._filter}: {refused[0]}"
            self._send.close()
        self._subscribed.set()

    async def _consume(self, handler: Handler, concurrency: int) -> None:
        """Hand messages to `handler` until the subscription is refused (on a reconnect)."""
        slots = trio.Semaphore(concurrency)
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()
                try:
                    delivery = await self._receive.receive()
                except trio.EndOfChannel:
                    nursery.cancel_scope.cancel()
                    return
                except BaseException:
                    slots.release()
                    raise
                nursery.start_soon(self._deliver, delivery, handler, slots)

    async def _deliver(self, delivery: _Delivery, handler: Handler, slots: trio.Semaphore) -> None:
        try:
            for attempt in itertools.count():
                try:
                    await handler(delivery.message)
                except Exception as exc:
                    if attempt == 0:
                        log.warning("MQTT %s: delivery failed (%s); retrying", self._filter, exc)
                    await trio.sleep(REDELIVERY_DELAY)
                else:
                    self._ack(delivery)
                    return
        finally:
            slots.release()

    def _ack(self, delivery: _Delivery) -> None:
        if delivery.qos == 0:
            return
        with self._ack_lock:
            # On a later connection the broker resends the message itself if it kept it.
            if delivery.connection == self._connection:
                self._client.ack(delivery.mid, delivery.qos)
