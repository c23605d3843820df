"""Pub/sub for gRPC apps: ListTopicSubscriptions discovery and OnTopicEvent delivery."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import trio
from google.protobuf import empty_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor

from config.dapr.subscription import BulkSubscribe
from filters.dapr.app_callback import metadata_from_headers
from filters.dapr.protos import appcallback_pb2
from filters.pubsub.delivery import (
    BulkEntry,
    Delivery,
    DeliveryFailed,
    Outcome,
    parse_traceparent,
)
from filters.pubsub.envelope import CLOUDEVENTS_JSON
from filters.pubsub.routing import RouteError, Routes, compile_rule
from filters.pubsub.subscriber import DISCOVERY_BACKOFF, DISCOVERY_RETRIES
from filters.pubsub.subscriptions import SubscriptionError, TopicSubscription
from proxy.chain import Handler
from proxy.grpc.client import unary_call
from proxy.grpc.status import GrpcError, StatusCode
from proxy.http.model import Headers, header_get

if TYPE_CHECKING:
    from dapr.proto.runtime.v1.appcallback_pb2 import (
        ListTopicSubscriptionsResponse,
        TopicEventBulkRequest,
        TopicEventBulkResponse,
        TopicEventRequest,
        TopicEventResponse,
    )
    from dapr.proto.runtime.v1.appcallback_pb2 import TopicSubscription as TopicSubscriptionProto

__all__ = ["GrpcAppChannel", "discover_grpc", "event_data", "from_proto", "topic_event_request"]

log = logging.getLogger("meshwire.pubsub")

_CALLBACK = appcallback_pb2.DESCRIPTOR.services_by_name["AppCallback"]
API_TOKEN = b"dapr-api-token"
TRACE_BIN = b"grpc-trace-bin"
# The CloudEvent fields TopicEventRequest has fields of its own for: not extensions.
_OWN_FIELDS = frozenset(
    {"id", "source", "type", "specversion", "datacontenttype", "data", "data_base64"}
)
_SUCCESS, _RETRY, _DROP = 0, 1, 2  # TopicEventResponse.TopicEventResponseStatus


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


ON_TOPIC_EVENT = _CALLBACK.methods_by_name["OnTopicEvent"]
ON_BULK_TOPIC_EVENT = _CALLBACK.methods_by_name["OnBulkTopicEvent"]
ON_BULK_ALPHA1 = appcallback_pb2.DESCRIPTOR.services_by_name["AppCallbackAlpha"].methods_by_name[
    "OnBulkTopicEventAlpha1"
]
LIST_TOPIC_SUBSCRIPTIONS = _CALLBACK.methods_by_name["ListTopicSubscriptions"]
ON_TOPIC_EVENT_PATH = _path(ON_TOPIC_EVENT)
LIST_TOPIC_SUBSCRIPTIONS_PATH = _path(LIST_TOPIC_SUBSCRIPTIONS)
TopicEventRequestType = cast(
    "type[TopicEventRequest]", message_factory.GetMessageClass(ON_TOPIC_EVENT.input_type)
)
TopicEventBulkRequestType = cast(
    "type[TopicEventBulkRequest]", message_factory.GetMessageClass(ON_BULK_TOPIC_EVENT.input_type)
)
TopicEventBulkResponseType = cast(
    "type[TopicEventBulkResponse]",
    message_factory.GetMessageClass(ON_BULK_TOPIC_EVENT.output_type),
)
TopicEventResponseType = cast(
    "type[TopicEventResponse]", message_factory.GetMessageClass(ON_TOPIC_EVENT.output_type)
)
ListResponseType = cast(
    "type[ListTopicSubscriptionsResponse]",
    message_factory.GetMessageClass(LIST_TOPIC_SUBSCRIPTIONS.output_type),
)


def _media(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _text(event: Mapping[str, object], key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""


def event_data(event: Mapping[str, object]) -> bytes:
    """The CloudEvent's data as daprd hands it to a gRPC app: data_base64 decoded, a string
    for text/* and XML, JSON (cloudevents) data re-serialized; any other data is not sent.
    DeliveryFailed (retriable) when the event holds data of the wrong shape."""
    encoded = event.get("data_base64")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise DeliveryFailed("unexpected data in the cloudevent: data_base64 not a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DeliveryFailed(f"unable to base64 decode data_base64: {exc}") from None
    data = event.get("data")
    if data is None:
        return b""
    media = _media(_text(event, "datacontenttype"))
    if media.startswith("text/") or media == "application/xml":
        if not isinstance(data, str):
            raise DeliveryFailed(f"unexpected data in the cloudevent for {media}: not a string")
        return data.encode("utf-8")
    if media in ("application/json", CLOUDEVENTS_JSON):
        # Go's json.Marshal of the decoded map: compact, object keys sorted.
        return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    return b""


def _fill_cloud_event(target: Any, event: Mapping[str, object]) -> None:
    """The CloudEvent's own fields, its data as bytes, and every other field (topic,
    traceparent, time, …) as `extensions`, on a TopicEventRequest or TopicEventCERequest."""
    target.id = _text(event, "id")
    target.source = _text(event, "source")
    target.type = _text(event, "type")
    target.spec_version = _text(event, "specversion")
    target.data_content_type = _text(event, "datacontenttype")
    target.data = event_data(event)
    extensions: dict[str, Any] = {k: v for k, v in event.items() if k not in _OWN_FIELDS}
    try:
        target.extensions.update(extensions)
    except (TypeError, ValueError) as exc:
        raise DeliveryFailed(f"cloudevent extensions are not a JSON object: {exc}") from None


def topic_event_request(delivery: Delivery) -> TopicEventRequest:
    """TopicEventRequest for one delivery: the CloudEvent, and where it was delivered."""
    pubsub = header_get(delivery.headers, b"pubsubname") or b""
    request = TopicEventRequestType(
        topic=delivery.topic or _text(delivery.event, "topic"),
        pubsub_name=pubsub.decode("utf-8", "replace"),
        path=delivery.path,
    )
    _fill_cloud_event(request, delivery.event)
    return request


def bulk_request(
    path: str, subscription: TopicSubscription, entries: Sequence[BulkEntry]
) -> TopicEventBulkRequest:
    """TopicEventBulkRequest: each entry's CloudEvent as a TopicEventCERequest."""
    request = TopicEventBulkRequestType(
        id=str(uuid.uuid4()),
        topic=subscription.topic,
        pubsub_name=subscription.pubsub,
        type="com.dapr.event.sent.bulk",
        path=path,
    )
    for entry in entries:
        added = request.entries.add(
            entry_id=entry.entry_id, content_type=CLOUDEVENTS_JSON, metadata=dict(entry.metadata)
        )
        _fill_cloud_event(added.cloud_event, entry.event)
    return request


def _trace_bin(traceparent: bytes | None) -> Headers:
    """The OpenCensus binary span context daprd also sends as `grpc-trace-bin`: version 0, then
    field 0 trace id, field 1 span id, field 2 trace options."""
    context = parse_traceparent(traceparent)
    if context is None:
        return []
    value = (
        b"\x00\x00"
        + context.trace_id.to_bytes(16, "big")
        + b"\x01"
        + context.span_id.to_bytes(8, "big")
        + bytes([2, int(context.trace_flags) & 0xFF])
    )
    return [(TRACE_BIN, value)]


def _outcome(status: int, event_id: str) -> Outcome:
    if status == _SUCCESS:
        return Outcome.SUCCESS
    if status == _DROP:
        log.warning("DROP status returned from app while processing pub/sub event %s", event_id)
        return Outcome.DROP
    if status != _RETRY:
        log.warning("unknown status %d returned from app for pub/sub event %s", status, event_id)
    return Outcome.RETRY


class GrpcAppChannel:
    """Delivery to a gRPC app: AppCallback/OnTopicEvent, read with daprd's semantics."""

    def __init__(
        self,
        send: Handler,
        authority: bytes,
        app_token: str | None,
        slots: trio.Semaphore | None,
    ) -> None:
        self._send = send
        self._authority = authority
        self._token = app_token
        self._slots = slots

    def _metadata(self, headers: Headers) -> Headers:
        """Broker metadata, pubsubName and the trace context, as daprd's custom metadata."""
        metadata = metadata_from_headers(headers)
        metadata += _trace_bin(header_get(headers, b"traceparent"))
        if self._token is not None:
            metadata.append((API_TOKEN, self._token.encode()))
        return metadata

    async def deliver(self, delivery: Delivery) -> Outcome:
        request = topic_event_request(delivery)
        if self._slots is not None:
            async with self._slots:
                return await self._call(request, self._metadata(delivery.headers))
        return await self._call(request, self._metadata(delivery.headers))

    async def deliver_bulk(
        self, path: str, subscription: TopicSubscription, entries: Sequence[BulkEntry]
    ) -> Mapping[str, Outcome]:
        """OnBulkTopicEvent (daprd falls back to AppCallbackAlpha's OnBulkTopicEventAlpha1 for
        apps built before it); an entry the app does not answer is retried."""
        request = bulk_request(path, subscription, entries)
        metadata = self._metadata([])
        async with self._slots if self._slots is not None else contextlib.nullcontext():
            try:
                reply = await self._bulk_call(_path(ON_BULK_TOPIC_EVENT), request, metadata)
            except GrpcError as err:
                if err.code != StatusCode.UNIMPLEMENTED:
                    raise DeliveryFailed(f"bulk delivery to the app failed: {err}") from err
                try:
                    reply = await self._bulk_call(_path(ON_BULK_ALPHA1), request, metadata)
                except GrpcError as alpha:
                    raise DeliveryFailed(f"bulk delivery to the app failed: {alpha}") from alpha
        outcomes = {entry.entry_id: Outcome.RETRY for entry in entries}
        for status in reply.statuses:
            if status.entry_id in outcomes:
                outcomes[status.entry_id] = _outcome(status.status, status.entry_id)
        return outcomes

    async def _bulk_call(
        self, path: str, request: TopicEventBulkRequest, metadata: Headers
    ) -> TopicEventBulkResponse:
        reply, _ = await unary_call(
            self._send,
            path,
            request,
            TopicEventBulkResponseType,
            metadata=metadata,
            authority=self._authority,
        )
        return reply

    async def _call(self, request: TopicEventRequest, metadata: Headers) -> Outcome:
        try:
            reply, _ = await unary_call(
                self._send,
                ON_TOPIC_EVENT_PATH,
                request,
                TopicEventResponseType,
                metadata=metadata,
                authority=self._authority,
            )
        except GrpcError as err:
            if err.code == StatusCode.UNIMPLEMENTED:
                log.warning(
                    "non-retriable error returned from app while processing pub/sub event %s: %s",
                    request.id,
                    err,
                )
                return Outcome.DROP
            raise DeliveryFailed(
                f"error returned from app while processing pub/sub event {request.id}: {err}"
            ) from err
        return _outcome(reply.status, request.id)


def from_proto(sub: TopicSubscriptionProto) -> TopicSubscription:
    """One entry of ListTopicSubscriptions. Without rules or a default route, events go to the
    path "" (OnTopicEvent is called either way); SubscriptionError or RouteError if unusable."""
    if not sub.pubsub_name or not sub.topic:
        raise SubscriptionError(f"pubsub_name and topic are required: {sub.pubsub_name!r}")
    rules = tuple(compile_rule(r.match, r.path) for r in sub.routes.rules)
    default = sub.routes.default or (None if rules else "")
    bulk = sub.bulk_subscribe
    return TopicSubscription(
        pubsub=sub.pubsub_name,
        topic=sub.topic,
        routes=Routes(rules, default),
        dead_letter_topic=sub.dead_letter_topic or None,
        metadata=dict(sub.metadata),
        bulk=BulkSubscribe(
            enabled=bulk.enabled,
            max_messages_count=bulk.max_messages_count or 100,
            max_await_duration_ms=bulk.max_await_duration_ms or 1000,
        ),
        kind="PROGRAMMATIC",
    )


def _subscriptions(reply: ListTopicSubscriptionsResponse) -> list[TopicSubscription]:
    found: list[TopicSubscription] = []
    for sub in reply.subscriptions:
        try:
            found.append(from_proto(sub))
        except (SubscriptionError, RouteError) as exc:
            log.warning("ignoring a subscription from ListTopicSubscriptions: %s", exc)
    return found


async def discover_grpc(
    send: Handler, authority: bytes, app_token: str | None
) -> list[TopicSubscription]:
    """AppCallback/ListTopicSubscriptions: UNIMPLEMENTED means none; other failures are logged,
    and mean none, after Dapr's initialization retries."""
    metadata: Headers = [] if app_token is None else [(API_TOKEN, app_token.encode())]
    delay = DISCOVERY_BACKOFF
    for attempt in range(DISCOVERY_RETRIES + 1):
        try:
            reply, _ = await unary_call(
                send,
                LIST_TOPIC_SUBSCRIPTIONS_PATH,
                empty_pb2.Empty(),
                ListResponseType,
                metadata=metadata,
                authority=authority,
            )
        except GrpcError as err:
            if err.code == StatusCode.UNIMPLEMENTED:
                return []
            log.warning("ListTopicSubscriptions failed: %s", err)
        else:
            return _subscriptions(reply)
        if attempt < DISCOVERY_RETRIES:
            await trio.sleep(delay)
            delay *= 1.5
    log.error("ListTopicSubscriptions kept failing: no subscriptions")
    return []
