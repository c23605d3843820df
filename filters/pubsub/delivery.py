"""Delivery of one message to the app: envelope, route, POST, Dapr's status semantics, DLQ."""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import trio
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from config.dapr.resolve import ResolvedComponentPolicy
from exporters.dapr_metrics import DaprMetrics
from exporters.spans import RecordingSpan, SpanRecorder
from filters.dapr.resiliency import backoff
from filters.pubsub.broker import Message, PublishRequest, PubSubError
from filters.pubsub.components import NamedPubSub
from filters.pubsub.envelope import (
    EnvelopeError,
    encode_event,
    expired,
    parse_event,
    synthesize_raw_event,
)
from filters.pubsub.routing import RouteError
from filters.pubsub.subscriptions import TopicSubscription
from filters.tracing.state import new_span_id, new_trace_id
from proxy.http.model import Headers

__all__ = [
    "AppChannel",
    "BulkEntry",
    "Deliverer",
    "Delivery",
    "DeliveryFailed",
    "Outcome",
    "Redeliver",
]

log = logging.getLogger("meshwire.pubsub")

DLQ_PUBLISH_TIMEOUT = 30.0  # seconds daprd allows a dead-letter publish
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9a-z-]+$")
_SKIP_HEADERS = frozenset(
    {b"content-length", b"content-type", b"host", b"connection", b"transfer-encoding"}
)


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    DROP = "drop"


class DeliveryFailed(Exception):
    """The app could not take the message (transport error, or a non-2xx other than 404)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Redeliver(Exception):
    """Raised to the broker: leave the message unacknowledged so it comes back."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt's input: where, what, and the headers that go with it."""

    path: str
    data: bytes  # the CloudEvent JSON as delivered
    event: Mapping[str, object]
    headers: Headers  # broker metadata and trace context
    topic: str = ""  # the subscription's (a dead-letter topic's events name their origin)


# Bulk subscriptions: hands a routed message to the batch for its path, returns its outcome.
Batch = Callable[[str, Message], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One message of a bulk batch, as the app is shown it."""

    entry_id: str
    event: Mapping[str, object]  # the CloudEvent
    metadata: Mapping[str, str]  # the broker's metadata of the message


class AppChannel(Protocol):
    """How messages reach the app: HTTP POSTs, or gRPC OnTopicEvent / OnBulkTopicEvent."""

    async def deliver(self, delivery: Delivery) -> Outcome: ...

    async def deliver_bulk(
        self, path: str, subscription: TopicSubscription, entries: Sequence[BulkEntry]
    ) -> Mapping[str, Outcome]:
        """A batch: the outcome of every entry (RETRY for one the app did not answer);
        DeliveryFailed when the app could not be reached."""
        ...


def parse_traceparent(value: object) -> SpanContext | None:
    """A W3C traceparent (str or bytes) as a remote span context; None if it is not one."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, True, TraceFlags(int(match.group(4), 16)))


def _metadata_headers(metadata: Mapping[str, str]) -> Headers:
    """Broker metadata as HTTP headers, keeping only what is a valid field."""
    headers: Headers = []
    for key, value in metadata.items():
        name = key.lower().encode("latin-1", "replace")
        if name in _SKIP_HEADERS or not _TOKEN.match(name):
            continue
        if "\r" in value or "\n" in value:
            continue
        headers.append((name, value.encode("latin-1", "replace")))
    return headers


class Deliverer:
    """The Handler one subscription gives its broker: raises Redeliver to leave a message
    unacknowledged, returns to acknowledge it."""

    def __init__(
        self,
        named: NamedPubSub,
        subscription: TopicSubscription,
        channel: AppChannel,
        policy: ResolvedComponentPolicy,
        metrics: DaprMetrics,
        namespace: str,
        recorder: SpanRecorder | None,
        batch: Batch | None = None,
    ) -> None:
        self.named = named
        self.subscription = subscription
        self.channel = channel
        self.policy = policy
        self.metrics = metrics
        self.namespace = namespace
        self.recorder = recorder
        self.batch = batch
        self._rng = random.Random()

    async def __call__(self, message: Message) -> None:
        started = time.monotonic()
        outcome = await self._handle(message)
        elapsed = (time.monotonic() - started) * 1000
        topic = self.subscription.topic
        self.metrics.delivered(self.named.name, self.namespace, topic, outcome.value, elapsed)
        if outcome is Outcome.RETRY:
            if await self._dead_letter(message):
                return
            raise Redeliver(f"the app did not take a message of topic {topic}")
        if outcome is Outcome.DROP:
            await self._dead_letter(message)

    async def _handle(self, message: Message) -> Outcome:
        sub = self.subscription
        try:
            data, event = self._event(message)
        except EnvelopeError as exc:
            log.warning("pubsub %s topic %s: %s", sub.pubsub, sub.topic, exc)
            return Outcome.RETRY
        if expired(event):
            log.warning("dropping expired pub/sub event %s", event.get("id"))
            return Outcome.DROP
        try:
            path = sub.routes.choose(event)
        except RouteError as exc:
            log.warning("pubsub %s topic %s: %s", sub.pubsub, sub.topic, exc)
            return Outcome.RETRY
        if path is None:
            log.warning(
                "no route matched event %s of topic %s: dropped", event.get("id"), sub.topic
            )
            return Outcome.DROP
        if self.batch is not None:
            return await self.batch(path, message)
        return await self._attempts(message, path, data, event)

    def _event(self, message: Message) -> tuple[bytes, Mapping[str, object]]:
        sub = self.subscription
        if sub.raw_payload:
            raw = synthesize_raw_event(message.data, sub.topic, sub.pubsub, message.metadata)
            return encode_event(raw), raw
        return message.data, parse_event(message.data)

    async def _attempts(
        self, message: Message, path: str, data: bytes, event: Mapping[str, object]
    ) -> Outcome:
        retry, timeout = self.policy.retry, self.policy.timeout
        done = 0
        while True:
            status: int | None = None
            try:
                with trio.fail_after(timeout) if timeout else contextlib.nullcontext():
                    outcome = await self._attempt(message, path, data, event)
            except DeliveryFailed as exc:
                log.warning("pubsub %s: delivery to %s failed: %s", self.named.name, path, exc)
                outcome, status = Outcome.RETRY, exc.status
            except trio.TooSlowError:
                outcome = Outcome.RETRY
            if outcome is not Outcome.RETRY or retry is None:
                return outcome
            if status is not None and not retry.retries_http_status(status):
                return outcome
            if 0 <= retry.max_retries <= done:
                return outcome
            await trio.sleep(backoff(retry, done, self._rng))
            done += 1

    async def _attempt(
        self, message: Message, path: str, data: bytes, event: Mapping[str, object]
    ) -> Outcome:
        parent = parse_traceparent(event.get("traceparent") or event.get("traceid"))
        context, span = self._span(parent, event.get("tracestate"))
        headers = _metadata_headers(message.metadata)
        headers.append((b"pubsubname", self.named.name.encode()))
        flags = int(context.trace_flags) & 0xFF
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
        headers.append((b"traceparent", traceparent.encode()))
        if context.trace_state:
            headers.append((b"tracestate", context.trace_state.to_header().encode()))
        try:
            delivery = Delivery(path, data, event, headers, self.subscription.topic)
            outcome = await self.channel.deliver(delivery)
        except BaseException as exc:
            if span is not None:
                span.set_error(str(exc))
                span.end()
            raise
        if span is not None:
            span.set_attribute("dapr.status", outcome.value)
            if outcome is Outcome.RETRY:
                span.set_error("the app asked for a retry")
            span.end()
        return outcome

    def _span(
        self, parent: SpanContext | None, tracestate: object
    ) -> tuple[SpanContext, RecordingSpan | None]:
        """`pubsub/<topic>`, a child of the publisher's span carried in the envelope."""
        state = TraceState.from_header([tracestate]) if isinstance(tracestate, str) else None
        if parent is None:
            context = SpanContext(new_trace_id(), new_span_id(), False, TraceFlags(0), state)
            return context, None
        context = SpanContext(parent.trace_id, new_span_id(), False, parent.trace_flags, state)
        if self.recorder is None or not parent.trace_flags.sampled:
            return context, None
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "pubsub",
            "messaging.destination.name": self.subscription.topic,
            "messaging.operation": "process",
            "dapr.component": self.named.name,
        }
        span = self.recorder.start(
            f"pubsub/{self.subscription.topic}", SpanKind.CLIENT, context, parent, attributes
        )
        return context, span

    async def _dead_letter(self, message: Message) -> bool:
        """Copy the broker message to the dead-letter topic, if there is one; True once it is
        there (the original may then be acknowledged)."""
        topic = self.subscription.dead_letter_topic
        if not topic:
            return False
        request = PublishRequest(topic, message.data, message.content_type, message.metadata)
        try:
            with trio.fail_after(DLQ_PUBLISH_TIMEOUT):
                await self.named.broker.publish(request)
        except (PubSubError, OSError, trio.TooSlowError) as exc:
            log.error(
                "pubsub %s: dead-letter publish to %s failed: %s", self.named.name, topic, exc
            )
            return False
        return True
