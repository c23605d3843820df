"""`pubsub.rabbitmq`: Dapr's RabbitMQ component on aio-pika, an exchange per topic."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import aio_pika
import aiormq
import trio
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    DeliveryMode,
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
from filters.pubsub.rabbitmq_settings import RabbitMQSettings, parse, ttl_seconds

__all__ = ["RabbitMQBroker"]

log = logging.getLogger("meshwire.pubsub")

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]

CONNECT_TIMEOUT = 10.0  # seconds for init's first connection
CONFIRM_TIMEOUT = 10.0  # seconds for the broker to confirm one publish
SETTLE_TIMEOUT = 10.0  # seconds to write one ack or nack
CLOSE_TIMEOUT = 5.0  # seconds to close a subscription's channel before giving up on it
REDELIVERY_DELAY = 0.05  # seconds before a failed message is handed back to the queue
# Channel-level refusals that reconnecting cannot cure: the subscription's settings are wrong.
CONFIG_ERRORS: tuple[type[Exception], ...] = (
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelNotFoundEntity,
)
BROKER_ERRORS: tuple[type[Exception], ...] = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,
)


def _headers(incoming: AbstractIncomingMessage) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in (incoming.headers or {}).items():
        headers[key] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return headers


def _routing_keys(metadata: Mapping[str, str]) -> list[str]:
    return [key.strip() for key in metadata.get("routingKey", "").split(",")]


class RabbitMQBroker:
    """Dapr's RabbitMQ broker: a durable exchange per topic; each consumer group its own queue
    `{group}-{topic}` bound to it; acknowledgements only after the app took the message."""

    features: frozenset[Feature] = frozenset({Feature.MESSAGE_TTL})

    def __init__(self, name: str, settings: RabbitMQSettings) -> None:
        self._name = name
        self._settings = settings
        self._thread = AsyncioThread(f"pubsub-rabbitmq-{name}")
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    def from_component(cls, component: Component) -> RabbitMQBroker:
        return cls(component.name, parse(component))

    async def init(self) -> None:
        self._thread.start()
        try:
            self._connection, self._publisher = await self._thread.call(self._connect)
        except BaseException as exc:
            await self._thread.aclose()
            if isinstance(exc, BROKER_ERRORS):
                raise PubSubError(f"pubsub {self._name}: cannot reach RabbitMQ: {exc!r}") from exc
            raise

    async def _connect(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel]:
        connection = aio_pika.RobustConnection(
            self._settings.url,
            reconnect_interval=self._settings.reconnect_wait,
            client_properties={"connection_name": self._settings.client_name},
        )
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT)
            channel = await connection.channel(publisher_confirms=True)
            await channel.get_underlay_channel()
        except BaseException:
            await connection.close()
            raise
        return connection, channel

    def _live(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel]:
        if self._connection is None or self._publisher is None:
            raise PubSubError(f"pubsub {self._name}: not initialised")
        return self._connection, self._publisher

    # -- publishing

    async def publish(self, request: PublishRequest) -> None:
        message = self._outgoing(request)
        routing_key = request.metadata.get("routingKey", "")
        try:
            with trio.fail_after(CONFIRM_TIMEOUT):
                await self._thread.call(lambda: self._send(request.topic, routing_key, message))
        except trio.TooSlowError:
            raise PubSubError(
                f"pubsub {self._name}: RabbitMQ did not confirm within {CONFIRM_TIMEOUT}s"
            ) from None
        except BROKER_ERRORS as exc:
            raise PubSubError(f"pubsub {self._name}: publish failed: {exc!r}") from exc

    def _outgoing(self, request: PublishRequest) -> aio_pika.Message:
        text = request.metadata.get("ttlInSeconds", "").strip()
        error = PubSubError(f"pubsub {self._name}: ttlInSeconds: expected whole seconds: {text!r}")
        ttl = ttl_seconds(text, error)
        ttl = self._settings.ttl if ttl is None else ttl
        priority = request.metadata.get("priority", "").strip()
        if priority and not (priority.isdigit() and int(priority) <= 255):
            raise PubSubError(f"pubsub {self._name}: priority: expected 0..255, got {priority!r}")
        persistent = self._settings.persistent
        return aio_pika.Message(
            request.data,
            headers=dict(request.metadata),
            content_type=request.content_type,
            delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT,
            expiration=ttl,
            priority=int(priority) if priority else None,
            message_id=request.metadata.get("messageID") or None,
            correlation_id=request.metadata.get("correlationID") or None,
            type=request.metadata.get("type") or None,
        )

    async def _send(self, topic: str, routing_key: str, message: aio_pika.Message) -> None:
        connection, channel = self._live()
        if not connection.connected.is_set():
            raise PubSubError(f"pubsub {self._name}: not connected to RabbitMQ (reconnecting)")
        exchange = self._exchanges.get(topic)
        if exchange is None:
            exchange = await self._declare_exchange(channel, topic)
            self._exchanges[topic] = exchange
        await exchange.publish(message, routing_key, mandatory=False, timeout=CONFIRM_TIMEOUT)

    async def _declare_exchange(
        self, channel: AbstractRobustChannel, topic: str
    ) -> AbstractExchange:
        return await channel.declare_exchange(topic, self._settings.exchange_kind, durable=True)

    # -- subscribing

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        concurrency = 1 if self._settings.single else max(1, request.concurrency)
        send, receive = trio.open_memory_channel[AbstractIncomingMessage](math.inf)

        def offer(incoming: AbstractIncomingMessage) -> None:
            # The subscription ended: closing its channel requeues the message.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                send.send_nowait(incoming)

        async def on_message(incoming: AbstractIncomingMessage) -> None:
            self._thread.to_trio(offer, incoming)

        # The asyncio side records the consumer's channel the moment it exists: a cancellation
        # racing with the call's result must still close it, or it holds messages hostage.
        opened: list[AbstractRobustChannel] = []
        try:
            await self._open_consumer(request, concurrency, on_message, opened)
            task_status.started()
            slots = trio.Semaphore(concurrency)
            async with receive, trio.open_nursery() as nursery:
                async for incoming in receive:
                    await slots.acquire()
                    nursery.start_soon(self._deliver, request.topic, incoming, handler, slots)
        finally:
            for channel in opened:
                await self._close_channel(channel)

    async def _open_consumer(
        self,
        request: SubscribeRequest,
        concurrency: int,
        on_message: OnMessage,
        opened: list[AbstractRobustChannel],
    ) -> None:
        """Return once basic.consume is acknowledged; retried while the broker is unreachable,
        PubSubError when it refuses the topology."""
        while True:
            try:
                return await self._thread.call(
                    lambda: self._consume(request, concurrency, on_message, opened)
                )
            except CONFIG_ERRORS as exc:
                raise PubSubError(
                    f"pubsub {self._name}: cannot subscribe to {request.topic!r}: {exc!r}"
                ) from exc
            except BROKER_ERRORS as exc:
                log.warning("pubsub %s: subscribe to %r failed: %r", self._name, request.topic, exc)
                await trio.sleep(self._settings.reconnect_wait)

    async def _consume(
        self,
        request: SubscribeRequest,
        concurrency: int,
        on_message: OnMessage,
        opened: list[AbstractRobustChannel],
    ) -> None:
        connection, _ = self._live()
        channel = connection.channel(publisher_confirms=False)
        opened.append(channel)
        try:
            await channel
            await channel.set_qos(prefetch_count=self._settings.prefetch or concurrency)
            exchange = await self._declare_exchange(channel, request.topic)
            name = request.metadata.get("queueName") or f"{request.group}-{request.topic}"
            arguments: dict[str, Any] = dict(self._settings.queue_arguments)
            if self._settings.dead_letter:
                arguments["x-dead-letter-exchange"] = await self._declare_dead_letter(channel, name)
            queue = await channel.declare_queue(
                name,
                durable=self._settings.durable,
                auto_delete=self._settings.auto_delete,
                arguments=arguments,
            )
            for key in _routing_keys(request.metadata):
                await queue.bind(exchange, key)
            await queue.consume(on_message, no_ack=self._settings.auto_ack)
        except BaseException:
            opened.remove(channel)
            await channel.close()
            raise

    async def _declare_dead_letter(self, channel: AbstractRobustChannel, queue: str) -> str:
        """Dapr's dead-letter topology: exchange `dlx-{queue}` into lazy queue `dlq-{queue}`."""
        exchange = await channel.declare_exchange(f"dlx-{queue}", "fanout", durable=True)
        arguments: dict[str, Any] = {**self._settings.queue_arguments, "x-queue-mode": "lazy"}
        dead = await channel.declare_queue(
            f"dlq-{queue}",
            durable=True,
            auto_delete=self._settings.auto_delete,
            arguments=arguments,
        )
        await dead.bind(exchange, "")
        return exchange.name

    async def _deliver(
        self,
        topic: str,
        incoming: AbstractIncomingMessage,
        handler: Handler,
        slots: trio.Semaphore,
    ) -> None:
        message = Message(topic, incoming.body, incoming.content_type, _headers(incoming))
        try:
            await handler(message)
        except Exception:
            if not self._settings.auto_ack:
                await trio.sleep(REDELIVERY_DELAY)
                await self._settle(lambda: incoming.nack(requeue=self._settings.requeue))
        else:
            if not self._settings.auto_ack:
                await self._settle(incoming.ack)
        finally:
            # Cancelled mid-handler: no ack; the channel's close hands the message back.
            slots.release()

    async def _settle(self, settle: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # A delivery whose channel died (broker restart) cannot be settled; RabbitMQ redelivers
        # it anyway. The deadline keeps a write stuck on a dead socket from holding a slot.
        with trio.move_on_after(SETTLE_TIMEOUT) as scope:
            try:
                await self._thread.call(settle)
            except BROKER_ERRORS as exc:
                log.debug("pubsub %s: cannot settle a delivery: %r", self._name, exc)
        if scope.cancelled_caught:
            log.debug("pubsub %s: settling a delivery timed out", self._name)

    async def _close_channel(self, channel: AbstractRobustChannel) -> None:
        async def close() -> None:
            await channel.close()

        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await self._thread.call(close)
            except BROKER_ERRORS as exc:
                log.debug("pubsub %s: closing a consumer channel: %r", self._name, exc)

    async def aclose(self) -> None:
        connection, self._connection, self._publisher = self._connection, None, None
        self._exchanges.clear()
        if connection is not None:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await self._thread.call(connection.close)
        await self._thread.aclose()
