"""The Broker protocol every pub/sub backend implements, with the delivery contract spelled out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import trio

__all__ = [
    "Broker",
    "Feature",
    "Handler",
    "Message",
    "PubSubError",
    "PublishRequest",
    "SubscribeRequest",
]


class Feature(StrEnum):
    """Dapr's pub/sub component capabilities, as /v1.0/metadata lists them."""

    MESSAGE_TTL = "MESSAGE_TTL"  # the broker expires messages itself (metadata ttlInSeconds)
    BULK_PUBLISH = "BULK_PUBLISH"
    SUBSCRIBE_WILDCARDS = "SUBSCRIBE_WILDCARDS"


class PubSubError(Exception):
    """The broker refused or failed an operation (unreachable, publish not confirmed, ...)."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """Publish `data` (already the serialized CloudEvent, or the raw payload) to `topic`.

    `metadata` is the request's component metadata (`metadata.*` query keys without the
    prefix), e.g. `ttlInSeconds`, `rawPayload`, or broker-specific keys."""

    topic: str
    data: bytes
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    """One message as it comes off the broker.

    `metadata` holds what the broker carried beside the payload (headers, properties);
    the runtime forwards it to the app as HTTP headers."""

    topic: str
    data: bytes
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """Consume `topic` as a member of consumer `group`.

    Every subscriber of one group shares the topic's messages (each message goes to one of
    them); each distinct group receives every message. `concurrency` bounds the handler
    calls in flight for this subscription; 1 means strictly one at a time, in the broker's
    order. `metadata` is the subscription's metadata (from the Subscription resource)."""

    topic: str
    group: str
    concurrency: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)


# Returns normally: the app has the message; acknowledge it. Raises Exception: not delivered;
# leave it unacknowledged (negative-acknowledge where the broker has that) to be redelivered.
Handler = Callable[[Message], Awaitable[None]]


class Broker(Protocol):
    """A pub/sub backend, addressed by a Dapr `pubsub.*` Component.

    At-least-once: a message is acknowledged to the broker only after `handler` returned for
    it. A subscriber that dies (cancelled, process killed) with messages in flight leaves them
    unacknowledged, and the broker redelivers them to another member of the group, or to the
    same group when it comes back. Durable brokers keep published messages across their own
    restarts and ours."""

    features: frozenset[Feature]

    async def init(self) -> None:
        """Connect and check the broker is usable; raise PubSubError (or OSError) if not."""

    async def publish(self, request: PublishRequest) -> None:
        """Return once the broker has accepted the message (as durably as it offers);
        raise PubSubError when it did not."""

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Consume until cancelled. Call `task_status.started()` once the group's consumer is
        registered: every message published after that reaches the group. Survives broker
        outages by reconnecting; raises only on a configuration error."""

    async def aclose(self) -> None:
        """Release connections; subscriptions have been cancelled already."""
