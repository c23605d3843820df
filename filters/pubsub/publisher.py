"""Publishing for the HTTP and gRPC APIs: lookup, scopes, the envelope, the broker, errors."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.util.types import AttributeValue

from exporters.dapr_metrics import DaprMetrics
from exporters.spans import RecordingSpan, SpanRecorder
from filters.dapr.params import metadata_value, parse_go_int, printable
from filters.pubsub.broker import Feature, PublishRequest, PubSubError
from filters.pubsub.components import NamedPubSub, PubSubs
from filters.pubsub.envelope import CLOUDEVENTS_JSON, EnvelopeError, Overrides, build_envelope
from filters.tracing.state import new_span_id
from proxy.http.errors import DaprApiError

__all__ = ["BulkEntry", "Publisher", "traceparent_of"]

RAW_PAYLOAD = "rawPayload"
TTL_IN_SECONDS = "ttlInSeconds"
MAX_TTL_SECONDS = (2**63 - 1) // 10**9  # a Go time.Duration's range, in seconds
BULK_PARALLELISM = 16  # entries of one bulk publish in flight at once


def traceparent_of(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _flag(metadata: Mapping[str, str], key: str) -> bool:
    """A boolean request metadata value (Dapr's strconv.ParseBool spellings)."""
    raw = metadata_value(metadata, key).strip()
    if not raw:
        return False
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise DaprApiError(
        "ERR_PUBSUB_REQUEST_METADATA",
        f"failed deserializing metadata: {key} must be a boolean, got {printable(raw[:40])}",
        status=400,
    )


def _ttl(metadata: Mapping[str, str]) -> int | None:
    """`ttlInSeconds` as components-contrib's TryGetTTL reads it: a 64-bit integer, and past
    what a Go duration holds (~292 years) that much; an envelope's `expiration` then stays a
    timestamp (a larger one overflowed building it: a 500)."""
    raw = metadata_value(metadata, TTL_IN_SECONDS).strip()
    if not raw:
        return None
    ttl = parse_go_int(raw)
    if ttl is None or not -(2**63) <= ttl < 2**63:
        raise DaprApiError(
            "ERR_PUBSUB_REQUEST_METADATA",
            "failed deserializing metadata: ttlInSeconds must be an integer, "
            f"got {printable(raw[:40])}",
            status=400,
        )
    return min(ttl, MAX_TTL_SECONDS)


@dataclass(frozen=True, slots=True)
class BulkEntry:
    entry_id: str
    body: bytes
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class Publisher:
    """Publishes for this app: it is the `source` of every envelope."""

    def __init__(
        self,
        pubsubs: PubSubs,
        app_id: str,
        metrics: DaprMetrics,
        recorder: SpanRecorder | None = None,
    ) -> None:
        self.pubsubs = pubsubs
        self.app_id = app_id
        self.metrics = metrics
        self.recorder = recorder  # bulk publish records a PRODUCER span per entry

    def lookup(self, name: str, topic: str) -> NamedPubSub:
        """The broker named `name`, if this app may publish to `topic` on it."""
        if not name:
            raise DaprApiError("ERR_PUBSUB_EMPTY", "pubsub name is empty", status=404)
        if not len(self.pubsubs):
            raise DaprApiError("ERR_PUBSUB_NOT_CONFIGURED", "no pubsub is configured", status=400)
        named = self.pubsubs.get(name)
        if named is None:
            raise DaprApiError("ERR_PUBSUB_NOT_FOUND", f"pubsub {name} is not found", status=404)
        if not topic:
            raise DaprApiError(
                "ERR_TOPIC_NAME_EMPTY", f"topic is empty in pubsub {name}", status=404
            )
        if not named.scopes.may_publish(self.app_id, topic):
            raise DaprApiError(
                "ERR_PUBSUB_FORBIDDEN",
                f"topic {topic} is not allowed for app id {self.app_id}",
                status=403,
            )
        return named

    def envelope(
        self,
        named: NamedPubSub,
        topic: str,
        body: bytes,
        content_type: str | None,
        metadata: Mapping[str, str],
        trace: SpanContext | None,
        tracestate: str | None = None,
    ) -> PublishRequest:
        """What goes to the broker: the body verbatim (rawPayload) or in its CloudEvent."""
        if _flag(metadata, RAW_PAYLOAD):
            return PublishRequest(topic, body, content_type, metadata)
        ttl = _ttl(metadata)
        native_ttl = Feature.MESSAGE_TTL in named.features
        traceparent = traceparent_of(trace) if trace is not None else None
        if trace is not None and tracestate is None and trace.trace_state:
            tracestate = trace.trace_state.to_header()
        overrides = Overrides.from_metadata(metadata, traceparent, tracestate or None)
        try:
            data = build_envelope(
                body,
                content_type,
                topic=topic,
                pubsub=named.name,
                source=self.app_id,
                overrides=overrides,
                ttl_seconds=None if native_ttl else ttl,
            )
        except EnvelopeError as exc:
            raise DaprApiError(
                "ERR_PUBSUB_CLOUD_EVENTS_SER",
                f"error when publishing to topic {topic} in pubsub {named.name}: {exc}",
                status=500,
            ) from None
        return PublishRequest(topic, data, CLOUDEVENTS_JSON, metadata)

    async def send(self, named: NamedPubSub, request: PublishRequest) -> None:
        """Hand one message to the broker; its failure is Dapr's ERR_PUBSUB_PUBLISH_MESSAGE."""
        started = time.monotonic()
        try:
            await named.broker.publish(request)
        except (PubSubError, OSError) as exc:
            self._observe(named, request.topic, False, started)
            raise DaprApiError(
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                f"error when publish to topic {request.topic} in pubsub {named.name}: {exc}",
                status=500,
            ) from exc
        self._observe(named, request.topic, True, started)

    def _observe(self, named: NamedPubSub, topic: str, ok: bool, started: float) -> None:
        elapsed = (time.monotonic() - started) * 1000
        self.metrics.published(named.name, self.pubsubs.namespace, topic, ok, elapsed)

    async def publish(
        self,
        named: NamedPubSub,
        topic: str,
        body: bytes,
        content_type: str | None,
        metadata: Mapping[str, str],
        trace: SpanContext | None,
    ) -> None:
        """Publish to a broker `lookup` returned (callers look it up before reading the body,
        so a bad name fails first, as in daprd)."""
        await self.send(named, self.envelope(named, topic, body, content_type, metadata, trace))

    async def bulk_publish(
        self,
        named: NamedPubSub,
        topic: str,
        entries: Sequence[BulkEntry],
        metadata: Mapping[str, str],
        trace: SpanContext | None,
    ) -> list[tuple[str, str]]:
        """Publish every entry, each in its own PRODUCER span (a child of the call's) whose
        context its envelope carries, as daprd does; the (entryId, error) of those that
        failed. Entry metadata overrides the request's."""
        prepared = []
        for entry in entries:
            context, span = self._entry_span(trace, topic)
            merged = {**metadata, **entry.metadata}
            try:
                request = self.envelope(
                    named, topic, entry.body, entry.content_type, merged, context
                )
            except BaseException:
                if span is not None:
                    span.end()
                raise
            prepared.append((entry.entry_id, request, span))
        failed: list[tuple[str, str]] = []
        slots = trio.Semaphore(BULK_PARALLELISM)

        async def one(entry_id: str, request: PublishRequest, span: RecordingSpan | None) -> None:
            async with slots:
                try:
                    await self.send(named, request)
                except DaprApiError as exc:
                    failed.append((entry_id, exc.message))
                    if span is not None:
                        span.set_error(exc.message)
                finally:
                    if span is not None:
                        span.end()

        async with trio.open_nursery() as nursery:
            for entry_id, request, span in prepared:
                nursery.start_soon(one, entry_id, request, span)
        return failed

    def _entry_span(
        self, parent: SpanContext | None, topic: str
    ) -> tuple[SpanContext | None, RecordingSpan | None]:
        if parent is None:
            return None, None
        context = SpanContext(
            parent.trace_id, new_span_id(), False, parent.trace_flags, parent.trace_state
        )
        if self.recorder is None or not parent.trace_flags.sampled:
            return context, None
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "pubsub",
            "messaging.destination.name": topic,
            "messaging.operation": "publish",
        }
        span = self.recorder.start(
            f"pubsub/{topic}", SpanKind.PRODUCER, context, parent, attributes
        )
        return context, span
