"""Streaming subscriptions: SubscribeTopicEventsAlpha1, events and their outcomes on one stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import trio
from google.protobuf import message_factory
from google.protobuf.message import Message

from config.dapr.resolve import resolve_component_policy
from filters.dapr.protos import dapr_pb2
from filters.pubsub.broker import SubscribeRequest
from filters.pubsub.delivery import (
    BulkEntry,
    Deliverer,
    Delivery,
    DeliveryFailed,
    Outcome,
)
from filters.pubsub.grpc_api import grpc_error
from filters.pubsub.grpc_app import topic_event_request
from filters.pubsub.publisher import Publisher
from filters.pubsub.routing import Routes
from filters.pubsub.subscriber import Subscriber, subscription_concurrency
from filters.pubsub.subscriptions import TopicSubscription
from proxy.grpc.context import RequestContext
from proxy.grpc.status import GrpcError, StatusCode
from proxy.http.errors import DaprApiError

if TYPE_CHECKING:
    from dapr.proto.runtime.v1.appcallback_pb2 import TopicEventRequest

__all__ = ["SUBSCRIBE_STREAM", "StreamingSubscriptions"]

SUBSCRIBE_STREAM = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods_by_name[
    "SubscribeTopicEventsAlpha1"
]
_Response = cast(Any, message_factory.GetMessageClass(SUBSCRIBE_STREAM.output_type))
_SUCCESS, _RETRY, _DROP = 0, 1, 2  # TopicEventResponse.TopicEventResponseStatus
_OUTCOMES = {_SUCCESS: Outcome.SUCCESS, _RETRY: Outcome.RETRY, _DROP: Outcome.DROP}


class _StreamChannel:
    """The app end of one stream: an event goes out, its outcome comes back by id."""

    def __init__(self, send: trio.MemorySendChannel[TopicEventRequest]) -> None:
        self._send = send
        self._waiting: dict[str, tuple[trio.Event, list[Outcome]]] = {}

    async def deliver(self, delivery: Delivery) -> Outcome:
        request = topic_event_request(delivery)
        done, outcome = trio.Event(), list[Outcome]()
        self._waiting[request.id] = (done, outcome)
        try:
            try:
                await self._send.send(request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise DeliveryFailed("the subscriber's stream has closed") from None
            await done.wait()
        finally:
            self._waiting.pop(request.id, None)
        return outcome[0]

    def processed(self, event_id: str, status: int) -> None:
        waiting = self._waiting.get(event_id)
        if waiting is not None:
            done, outcome = waiting
            outcome.append(_OUTCOMES.get(status, Outcome.RETRY))
            done.set()

    async def deliver_bulk(
        self, path: str, subscription: TopicSubscription, entries: Sequence[BulkEntry]
    ) -> Mapping[str, Outcome]:
        raise DeliveryFailed("streaming subscriptions take events one by one")


class StreamingSubscriptions:
    """Serves SubscribeTopicEventsAlpha1: the first request names the pubsub and topic; the
    sidecar answers with an initial response, then sends each event and waits for the app's
    `event_processed` (SUCCESS / RETRY / DROP) before acknowledging it to the broker."""

    def __init__(
        self,
        publisher: Publisher,
        subscriber: Subscriber,
        background: Callable[[], trio.Nursery | None],
    ) -> None:
        self.publisher = publisher
        self.subscriber = subscriber
        self.background = background  # the sidecar's long-lived nursery, once it runs

    async def __call__(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Message]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, "no initial request") from None
        if not first.HasField("initial_request"):
            raise GrpcError(
                StatusCode.INVALID_ARGUMENT, "the first message must be an initial request"
            )
        initial = first.initial_request
        try:
            named = self.publisher.lookup(initial.pubsub_name, initial.topic)
        except DaprApiError as exc:
            raise grpc_error(exc) from exc
        if not named.scopes.may_subscribe(self.publisher.app_id, initial.topic):
            raise GrpcError(
                StatusCode.PERMISSION_DENIED,
                f"app {self.publisher.app_id} may not subscribe to topic {initial.topic}",
            )
        background = self.background()
        if background is None:
            raise GrpcError(StatusCode.UNAVAILABLE, "the sidecar is not running yet")
        subscription = TopicSubscription(
            pubsub=named.name,
            topic=initial.topic,
            routes=Routes((), ""),
            dead_letter_topic=initial.dead_letter_topic or None,
            metadata=dict(initial.metadata),
            kind="STREAMING",
        )
        send, receive = trio.open_memory_channel[Any](0)
        channel = _StreamChannel(send)
        subscriber = self.subscriber
        deliverer = Deliverer(
            named,
            subscription,
            channel,
            resolve_component_policy(subscriber.resiliencies, named.name, "inbound"),
            subscriber.metrics,
            subscriber.pubsubs.namespace,
            subscriber.recorder,
        )
        request = SubscribeRequest(
            initial.topic,
            named.consumer_id,
            subscription_concurrency(named, subscription),
            dict(initial.metadata),
        )
        scope = trio.CancelScope()

        async def consume(*, task_status: trio.TaskStatus[None]) -> None:
            with scope:
                async with send, trio.open_nursery() as nursery:
                    await nursery.start(named.broker.subscribe, request, deliverer)
                    task_status.started()
                    async for message in requests:  # the app's outcomes, until it hangs up
                        if message.HasField("event_processed"):
                            processed = message.event_processed
                            channel.processed(processed.id, processed.status.status)
                    nursery.cancel_scope.cancel()

        await background.start(consume)
        subscriber.active.append(subscription)
        try:
            yield _Response(initial_response={})
            async for event in receive:
                yield _Response(event_message=event)
        finally:
            scope.cancel()
            subscriber.active.remove(subscription)
