"""Runs the app's subscriptions: discovers them, checks scopes, and consumes each topic."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from config.dapr.resiliency import Resiliency
from config.dapr.resolve import resolve_component_policy
from config.dapr.subscription import Subscription as SubscriptionResource
from exporters.dapr_metrics import DaprMetrics
from exporters.spans import SpanRecorder
from filters.dapr.bodies import read_body
from filters.dapr.params import metadata_value
from filters.pubsub.broker import PubSubError, SubscribeRequest
from filters.pubsub.bulk import BulkRoutes
from filters.pubsub.components import NamedPubSub, PubSubs
from filters.pubsub.delivery import AppChannel, Deliverer
from filters.pubsub.routing import RouteError
from filters.pubsub.subscriptions import (
    SubscriptionError,
    TopicSubscription,
    from_resource,
    merge,
    parse_programmatic,
)
from proxy.http.errors import ProxyError
from proxy.http.model import EmptyBody, Request, Response

__all__ = ["DEFAULT_CONCURRENCY", "Subscriber", "discover_http", "subscription_concurrency"]

log = logging.getLogger("meshwire.pubsub")

DEFAULT_CONCURRENCY = 10  # handler calls in flight per subscription, as Dapr's Redis default
# DaprBuiltInInitializationRetries: exponential from 500 ms, at most 3 retries.
DISCOVERY_RETRIES = 3
DISCOVERY_BACKOFF = 0.5
RESUBSCRIBE_BACKOFF, RESUBSCRIBE_BACKOFF_MAX = 1.0, 30.0  # seconds

Discover = Callable[[], Awaitable[list[TopicSubscription]]]


async def discover_http(
    send: Callable[[Request], Awaitable[Response]], authority: bytes, app_id: str
) -> list[TopicSubscription]:
    """GET /dapr/subscribe on the app: 404 means none; other failures are logged, and mean
    none, after Dapr's initialization retries."""
    delay = DISCOVERY_BACKOFF
    for attempt in range(DISCOVERY_RETRIES + 1):
        request = Request(
            b"GET",
            b"/dapr/subscribe",
            [(b"content-type", b"application/json"), (b"dapr-app-id", app_id.encode())],
            EmptyBody(),
            authority=authority,
        )
        try:
            response = await send(request)
            body = await read_body(response.body, 4 << 20)
        except ProxyError as exc:
            log.warning("GET /dapr/subscribe failed: %s", exc.message)
        else:
            if response.status == 404:
                return []
            if response.status == 200:
                try:
                    return parse_programmatic(body)
                except SubscriptionError as exc:
                    log.error("%s", exc)
                    return []
            log.error("GET /dapr/subscribe answered %d: no subscriptions", response.status)
            return []
        if attempt < DISCOVERY_RETRIES:
            await trio.sleep(delay)
            delay *= 1.5
    return []


def subscription_concurrency(named: NamedPubSub, sub: TopicSubscription) -> int:
    """The subscription's `concurrency` metadata, else the Component's, else the default."""
    for source in (sub.metadata, named.component.metadata):
        raw = metadata_value(source, "concurrency").strip()
        if raw:
            try:
                return max(1, int(raw))
            except ValueError:
                log.warning("pubsub %s: concurrency %r is not a number", named.name, raw)
    return DEFAULT_CONCURRENCY


async def _supervised(
    named: NamedPubSub,
    request: SubscribeRequest,
    deliverer: Deliverer,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Consume `request` for as long as the sidecar runs: a subscription the broker ends with
    an error is started again after a pause, so one broker's failure never stops the sidecar."""
    delay = RESUBSCRIBE_BACKOFF
    while True:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(named.broker.subscribe, request, deliverer)
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                delay = RESUBSCRIBE_BACKOFF
        except Exception as exc:  # a broker client's own error types: the boundary is here
            log.error(
                "pubsub %s: subscription to %s failed: %s; retrying in %gs",
                named.name,
                request.topic,
                exc,
                delay,
                exc_info=not isinstance(exc, PubSubError | OSError),
            )
        else:
            log.warning("pubsub %s: subscription to %s ended", named.name, request.topic)
        await trio.sleep(delay)
        delay = min(delay * 2, RESUBSCRIBE_BACKOFF_MAX)


class Subscriber:
    """The subscriptions of this app, declarative and programmatic, once they run."""

    def __init__(
        self,
        pubsubs: PubSubs,
        resources: Sequence[SubscriptionResource],
        resiliencies: Sequence[Resiliency],
        metrics: DaprMetrics,
        recorder: SpanRecorder | None,
    ) -> None:
        self.pubsubs = pubsubs
        self.resources = resources
        self.resiliencies = resiliencies
        self.metrics = metrics
        self.recorder = recorder
        self.active: list[TopicSubscription] = []
        self.running = trio.Event()

    def _declarative(self) -> list[TopicSubscription]:
        found: list[TopicSubscription] = []
        for resource in self.resources:
            try:
                found.append(from_resource(resource))
            except RouteError as exc:
                log.error("Subscription %s is ignored: %s", resource.name, exc)
        return found

    async def run(
        self,
        channel: AppChannel,
        discover: Discover | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Consume every subscription until cancelled; started once each consumer is
        registered with its broker."""
        programmatic = await discover() if discover is not None else []
        wanted = merge(self._declarative(), programmatic)
        app_id = self.pubsubs.app_id
        async with trio.open_nursery() as nursery:
            for sub in wanted:
                named = self.pubsubs.get(sub.pubsub)
                if named is None:
                    log.warning("subscription to %s: no pubsub named %s", sub.topic, sub.pubsub)
                    continue
                if not named.scopes.may_subscribe(app_id, sub.topic):
                    log.warning("app %s may not subscribe to topic %s", app_id, sub.topic)
                    continue
                policy = resolve_component_policy(self.resiliencies, named.name, "inbound")
                batch = BulkRoutes(sub, channel) if sub.bulk.enabled else None
                deliverer = Deliverer(
                    named,
                    sub,
                    channel,
                    policy,
                    self.metrics,
                    self.pubsubs.namespace,
                    self.recorder,
                    batch,
                )
                concurrency = subscription_concurrency(named, sub)
                if batch is not None:  # a batch fills only with that many messages in flight
                    concurrency = max(concurrency, sub.bulk.max_messages_count)
                request = SubscribeRequest(
                    sub.topic, named.consumer_id, concurrency, dict(sub.metadata)
                )
                await nursery.start(_supervised, named, request, deliverer)
                self.active.append(sub)
                log.info(
                    "subscribed to topic %s on pubsub %s (%s)", sub.topic, sub.pubsub, sub.kind
                )
            self.running.set()
            task_status.started()
            await trio.sleep_forever()
