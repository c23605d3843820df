"""`pubsub.jetstream`: Dapr's NATS JetStream broker on nats-py, run on a private asyncio thread."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client, RawCredentials
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)

from config.dapr.component import Component
from filters.pubsub.aio import AsyncioThread
from filters.pubsub.broker import (
    Feature,
    Handler,
    Message,
    PublishRequest,
    PubSubError,
    SubscribeRequest,
)
from filters.pubsub.coalesce import Coalescer
from filters.pubsub.jetstream_settings import JetStreamSettings, jetstream_name, parse

__all__ = ["JetStreamBroker", "jetstream_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CONTENT_TYPE = "Content-Type"
MSG_ID = "Nats-Msg-Id"
RECONNECT_WAIT = 0.5  # seconds between reconnection attempts
API_TIMEOUT = 5.0  # seconds for a JetStream API call or a publish acknowledgement
FETCH_WAIT = 5.0  # seconds a pull request lingers on the server
RETRY_DELAY = 0.5  # seconds before retrying while the server is unreachable
REDELIVERY_DELAY = 0.05  # seconds before a failed message is offered again
SETTLE_DEADLINE = 2.0  # seconds to send an ack/nak while being cancelled
CLOSE_DEADLINE = 5.0

_SUBJECT_UNSAFE = re.compile(r"[\s]")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without ':' or spaces


def _check_subject(topic: str) -> None:
    if not topic or _SUBJECT_UNSAFE.search(topic) or "" in topic.split("."):
        raise PubSubError(f"topic {topic!r} is not a valid NATS subject")


def _transient(exc: Exception) -> bool:
    """Whether `exc` comes from an unreachable or recovering server rather than a refusal."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    if isinstance(exc, nats.js.errors.APIError | nats.errors.BadSubjectError):
        return False
    return isinstance(exc, nats.errors.Error | OSError | TimeoutError)


def _headers(request: PublishRequest) -> dict[str, str]:
    headers = {
        key: value
        for key, value in request.metadata.items()
        if _HEADER_NAME.match(key) and "\r" not in value and "\n" not in value
    }
    if request.content_type:
        headers[CONTENT_TYPE] = request.content_type
    event_id = _cloudevent_id(request)
    if event_id:
        headers[MSG_ID] = event_id
    return headers


def _cloudevent_id(request: PublishRequest) -> str | None:
    if not (request.content_type or "").startswith("application/cloudevents"):
        return None
    try:
        event = json.loads(request.data)
    except ValueError:
        return None
    found = event.get("id") if isinstance(event, dict) else None
    return found if isinstance(found, str) and found else None


def _message(topic: str, msg: Msg) -> Message:
    headers = dict(msg.headers or {})
    content_type = headers.pop(CONTENT_TYPE, None)
    metadata = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
    return Message(topic, msg.data, content_type, metadata)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One publish waiting for the next crossing to the asyncio thread."""

    topic: str
    data: bytes
    headers: dict[str, str]


class JetStreamBroker:
    """Dapr's `pubsub.jetstream`: topics are NATS subjects kept in durable streams.

    Dapr expects the user to create the stream; this broker creates what is missing. With
    `streamName` set it uses that stream, creating it (file storage) when missing and adding
    a topic it does not capture yet to its subjects; without it, the stream that captures the
    subject, or a new one named after the topic when none does.

    Each (consumer group, topic) is a durable pull consumer named from `durableName` (else the
    group) and the topic, so every member of a group, in any process, pulls from the same
    consumer and shares its messages. A new consumer starts at new messages (`deliverPolicy`,
    `startSequence`, `startTime` change that); it then remembers its place. A message is
    acknowledged once the handler returned, negatively acknowledged when it raised or was
    cancelled. A published CloudEvent's id is its Nats-Msg-Id, as in Dapr.

    `queueGroupName`, `deliverGroup`, `flowControl`, `rateLimit` and `heartbeat` configure push
    consumers: accepted, unused. Per-message TTL needs NATS 2.11: not offered."""

    features: frozenset[Feature] = frozenset()

    def __init__(
        self, settings: JetStreamSettings, component_name: str, connect_deadline: float
    ) -> None:
        self._settings = settings
        self._component = component_name
        self._connect_deadline = connect_deadline
        self._thread = AsyncioThread(f"nats-{component_name}")
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, str] = {}  # topic → stream
        self._stream_lock = trio.Lock()
        self._publishes = Coalescer[_Outgoing](self._publish_all)

    @classmethod
    def from_component(cls, component: Component) -> JetStreamBroker:
        deadline = max(1.0, 0.8 * (component.init_timeout or 5.0))
        return cls(parse(component), component.name, deadline)

    # -- connection -------------------------------------------------------------------------

    async def _call(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await self._thread.call(factory)

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise PubSubError(f"pubsub {self._component}: not connected")
        return self._js

    async def init(self) -> None:
        self._thread.start()
        client = self._client = Client()
        with trio.move_on_after(self._connect_deadline):
            await self._call(lambda: client.connect(**self._connect_options()))
        if not client.is_connected:
            reason = client.last_error or "no answer"
            raise PubSubError(f"cannot connect to NATS at {self._settings.url}: {reason}")
        options: dict[str, Any] = {"timeout": API_TIMEOUT, "domain": self._settings.domain}
        if self._settings.api_prefix:
            options["prefix"] = self._settings.api_prefix
        js = client.jetstream(**options)
        try:
            await self._call(js.account_info)
        except nats.errors.Error as exc:
            raise PubSubError(
                f"JetStream is not available at {self._settings.url}: {exc!r}"
            ) from exc
        self._js = js

    def _connect_options(self) -> dict[str, Any]:
        settings = self._settings
        return {
            "servers": [u.strip() for u in settings.url.split(",")],
            "name": settings.connection_name,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT,
            "token": settings.token,
            "user_credentials": (
                RawCredentials(settings.credentials) if settings.credentials else None
            ),
            "tls": settings.tls,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
        }

    async def _on_error(self, exc: Exception) -> None:
        log.debug("pubsub %s: NATS: %r", self._component, exc)

    async def _on_disconnect(self) -> None:
        log.info("pubsub %s: disconnected from NATS; reconnecting", self._component)

    async def _on_reconnect(self) -> None:
        log.info("pubsub %s: reconnected to NATS", self._component)

    async def aclose(self) -> None:
        client, self._client, self._js = self._client, None, None
        with trio.CancelScope(shield=True):
            if client is not None:
                with trio.move_on_after(CLOSE_DEADLINE):
                    await self._call(client.close)
            await self._thread.aclose()

    # -- streams ----------------------------------------------------------------------------

    async def _stream_for(self, topic: str) -> str:
        """The stream that captures `topic`, created (or extended) when there is none."""
        found = self._streams.get(topic)
        if found is not None:
            return found
        async with self._stream_lock:
            found = self._streams.get(topic) or await self._ensure_stream(topic)
        self._streams[topic] = found
        return found

    async def _capturing(self, topic: str) -> str | None:
        try:
            return await self._call(lambda: self.js.find_stream_name_by_subject(topic))
        except nats.js.errors.NotFoundError:
            return None

    async def _ensure_stream(self, topic: str) -> str:
        wanted = self._settings.stream_name
        found = await self._capturing(topic)
        if found is not None:
            if wanted is not None and found != wanted:
                raise PubSubError(f"topic {topic!r} is captured by stream {found}, not {wanted}")
            return found
        name = wanted or jetstream_name(topic)
        try:
            info = await self._call(lambda: self.js.stream_info(name))
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=name,
                subjects=[topic],
                storage=StorageType.FILE,
                num_replicas=self._settings.replicas,
            )
            await self._call(lambda: self.js.add_stream(config))
            log.info("pubsub %s: created stream %s for %s", self._component, name, topic)
            return name
        subjects = [*(info.config.subjects or []), topic]
        await self._call(lambda: self.js.update_stream(info.config.evolve(subjects=subjects)))
        log.info("pubsub %s: stream %s now captures %s", self._component, name, topic)
        return name

    # -- publish ----------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> None:
        _check_subject(request.topic)
        if "*" in request.topic or ">" in request.topic:
            raise PubSubError(f"cannot publish to the wildcard subject {request.topic!r}")
        headers = _headers(request)
        try:
            await self._publish_once(request, headers)
        except nats.js.errors.NoStreamResponseError:
            self._streams.pop(request.topic, None)
            await self._guarded(lambda: self._publish_once(request, headers), request.topic)

    async def _publish_once(self, request: PublishRequest, headers: dict[str, str]) -> None:
        await self._guarded(lambda: self._stream_for(request.topic), request.topic)
        topic, data = request.topic, request.data
        try:
            await self._publishes.submit(_Outgoing(topic, data, headers))
        except nats.errors.MaxPayloadError:
            raise PubSubError(
                f"publish to {topic}: {len(data)} bytes (and headers) exceed the NATS server's"
                f" max_payload of {self._max_payload()} bytes"
            ) from None
        except nats.js.errors.NoStreamResponseError:
            raise
        except nats.errors.Error as exc:
            raise PubSubError(f"publish to {topic} not confirmed: {exc!r}") from exc

    async def _publish_all(self, batch: list[_Outgoing]) -> list[BaseException | None]:
        """js.publish of every message, each awaited with its ack, in one crossing to the
        asyncio thread (publishes that arrive together share it)."""
        js = self.js

        async def send_all() -> list[object]:
            sends = [js.publish(e.topic, e.data, API_TIMEOUT, headers=e.headers) for e in batch]
            return list(await asyncio.gather(*sends, return_exceptions=True))

        outcomes: list[BaseException | None] = []
        for entry, result in zip(batch, await self._call(send_all), strict=True):
            if isinstance(result, Exception):
                outcomes.append(result)
            elif isinstance(result, BaseException):  # asyncio's CancelledError
                outcomes.append(PubSubError(f"publish to {entry.topic} was cancelled"))
            else:
                outcomes.append(None)
        return outcomes

    def _max_payload(self) -> int:
        return self._client.max_payload if self._client is not None else 0

    async def _guarded(self, operation: Callable[[], Awaitable[str | None]], topic: str) -> None:
        try:
            await operation()
        except nats.errors.Error as exc:
            raise PubSubError(f"topic {topic}: {exc!r}") from exc

    # -- subscribe --------------------------------------------------------------------------

    def _consumer_name(self, request: SubscribeRequest) -> str:
        base = self._settings.durable_name or request.group
        return jetstream_name(f"{base}-{request.topic}")

    def _consumer_config(self, name: str, topic: str) -> ConsumerConfig:
        settings = self._settings
        return ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy(settings.deliver_policy),
            opt_start_seq=settings.start_sequence,
            opt_start_time=settings.start_time,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            max_deliver=settings.max_deliver,
            backoff=settings.backoff,
            max_ack_pending=settings.max_ack_pending,
            num_replicas=settings.replicas,
            mem_storage=settings.memory_storage or None,
            filter_subject=topic,
        )

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """`operation` until it succeeds; while the server is away, wait for it."""
        while True:
            try:
                return await operation()
            except nats.errors.Error as exc:
                if not _transient(exc):
                    raise PubSubError(f"pubsub {self._component}: {what}: {exc!r}") from exc
                log.debug("pubsub %s: %s: %r; retrying", self._component, what, exc)
            await trio.sleep(RETRY_DELAY)

    async def _ensure_consumer(self, stream: str, name: str, topic: str) -> None:
        js = self.js
        try:
            await self._call(lambda: js.consumer_info(stream, name))
            return
        except nats.js.errors.NotFoundError:
            pass
        config = self._consumer_config(name, topic)
        try:
            await self._call(lambda: js.add_consumer(stream, config))
        except nats.js.errors.BadRequestError:
            # Another member created it first with a different config: use theirs.
            await self._call(lambda: js.consumer_info(stream, name))

    async def _ensure_group(self, request: SubscribeRequest, name: str) -> str:
        """The stream of the group's consumer, once both exist."""
        stream = await self._retrying(lambda: self._stream_for(request.topic), "stream")
        await self._retrying(lambda: self._ensure_consumer(stream, name, request.topic), name)
        return stream

    async def _open_consumer(
        self, request: SubscribeRequest, name: str
    ) -> JetStreamContext.PullSubscription:
        stream = await self._ensure_group(request, name)
        js = self.js
        return await self._call(lambda: js.pull_subscribe_bind(durable=name, stream=stream))

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        _check_subject(request.topic)
        name = self._consumer_name(request)
        pull = await self._open_consumer(request, name)
        task_status.started()
        try:
            await self._consume(request, name, pull, handler)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(SETTLE_DEADLINE):
                await self._quietly(pull.unsubscribe)

    async def _consume(
        self,
        request: SubscribeRequest,
        name: str,
        pull: JetStreamContext.PullSubscription,
        handler: Handler,
    ) -> None:
        slots = trio.Semaphore(max(1, request.concurrency))
        async with trio.open_nursery() as nursery:
            while True:
                taken = await _take_slots(slots)
                try:
                    messages = await self._fetch(request, name, pull, taken)
                except BaseException:
                    _release(slots, taken)
                    raise
                _release(slots, taken - len(messages))
                for msg in messages:
                    nursery.start_soon(self._deliver, request.topic, msg, handler, slots)

    async def _fetch(
        self,
        request: SubscribeRequest,
        name: str,
        pull: JetStreamContext.PullSubscription,
        batch: int,
    ) -> list[Msg]:
        """Up to `batch` messages; none when the pull request expired or the server is away.
        An idle or refused pull checks that the consumer still exists (it may have been
        deleted, or lost in a restart when memory-stored) and creates it again."""
        try:
            return await self._call(lambda: pull.fetch(batch, FETCH_WAIT))
        except nats.errors.TimeoutError:
            pass
        except nats.js.errors.APIError as exc:
            log.warning("pubsub %s: consumer %s: %r", self._component, name, exc)
            await trio.sleep(RETRY_DELAY)
        except nats.errors.Error as exc:
            log.debug("pubsub %s: fetch %s: %r", self._component, name, exc)
            await trio.sleep(RETRY_DELAY)
            return []
        await self._ensure_group(request, name)
        return []

    async def _deliver(self, topic: str, msg: Msg, handler: Handler, slots: trio.Semaphore) -> None:
        try:
            try:
                await handler(_message(topic, msg))
            except Exception:
                # Hold the slot while waiting, so with concurrency 1 the message comes back
                # before anything newer is fetched.
                await trio.sleep(REDELIVERY_DELAY)
                await self._quietly(msg.nak)
            else:
                await self._quietly(msg.ack)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(SETTLE_DEADLINE):
                await self._quietly(msg.nak)  # cancelled mid-delivery: the group gets it back
            raise
        finally:
            slots.release()

    async def _quietly(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Ack, nak or unsubscribe; a lost ack only means the message comes back after ackWait."""
        try:
            await self._call(action)
        except (nats.errors.Error, RuntimeError) as exc:
            log.debug("pubsub %s: %r", self._component, exc)


async def _take_slots(slots: trio.Semaphore) -> int:
    """Wait for one free slot, then take every other free one: the next fetch's batch."""
    await slots.acquire()
    taken = 1
    while True:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            return taken
        taken += 1


def _release(slots: trio.Semaphore, count: int) -> None:
    for _ in range(count):
        slots.release()
