"""Bulk subscribe: routed messages gathered into batches, each entry answered by its own status."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from config.dapr.subscription import BulkSubscribe
from filters.pubsub.broker import Message
from filters.pubsub.delivery import AppChannel, BulkEntry, DeliveryFailed, Outcome
from filters.pubsub.envelope import EnvelopeError, expired, parse_event
from filters.pubsub.subscriptions import TopicSubscription

__all__ = ["BulkBatcher", "BulkRoutes"]

log = logging.getLogger("meshwire.pubsub")


@dataclass(slots=True)
class _Entry:
    message: Message
    entry_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    outcome: Outcome = Outcome.RETRY
    done: trio.Event = field(default_factory=trio.Event)


class BulkBatcher:
    """Gathers the messages the broker hands over concurrently into batches of at most
    `maxMessagesCount`, waiting at most `maxAwaitDurationMs` for a batch to fill. The first
    message of a batch leads it: it waits, sends, and wakes the others with their outcomes."""

    def __init__(
        self,
        subscription: TopicSubscription,
        path: str,
        channel: AppChannel,
        settings: BulkSubscribe,
    ) -> None:
        self.subscription = subscription
        self.path = path
        self.channel = channel
        self.max_count = max(1, settings.max_messages_count)
        self.max_wait = settings.max_await_duration_ms / 1000
        self._batch: list[_Entry] = []
        self._full = trio.Event()

    async def deliver(self, message: Message) -> Outcome:
        entry = _Entry(message)
        self._batch.append(entry)
        if len(self._batch) == 1:
            with trio.move_on_after(self.max_wait):
                await self._full.wait()
            batch, self._batch, self._full = self._batch, [], trio.Event()
            await self._send(batch)
        elif len(self._batch) >= self.max_count:
            self._full.set()
        await entry.done.wait()
        return entry.outcome

    async def _send(self, batch: list[_Entry]) -> None:
        live: list[tuple[_Entry, Mapping[str, object]]] = []
        for entry in batch:
            try:
                event = parse_event(entry.message.data)
            except EnvelopeError as exc:
                log.warning("bulk delivery of %s: %s", self.subscription.topic, exc)
                entry.outcome = Outcome.RETRY
                continue
            if expired(event):
                entry.outcome = Outcome.DROP
                continue
            live.append((entry, event))
        try:
            if live:
                await self._post(live)
        finally:
            for entry in batch:
                entry.done.set()

    async def _post(self, live: list[tuple[_Entry, Mapping[str, object]]]) -> None:
        entries = [BulkEntry(e.entry_id, event, e.message.metadata) for e, event in live]
        try:
            outcomes = await self.channel.deliver_bulk(self.path, self.subscription, entries)
        except DeliveryFailed as exc:
            log.warning("bulk delivery of %s failed: %s", self.subscription.topic, exc)
            return  # every entry keeps RETRY
        for entry, _ in live:
            entry.outcome = outcomes.get(entry.entry_id, Outcome.RETRY)


class BulkRoutes:
    """One batcher per route: entries are routed one by one, then gathered per path."""

    def __init__(self, subscription: TopicSubscription, channel: AppChannel) -> None:
        self.subscription = subscription
        self.channel = channel
        self._batchers: dict[str, BulkBatcher] = {}

    async def __call__(self, path: str, message: Message) -> Outcome:
        batcher = self._batchers.get(path)
        if batcher is None:
            settings = self.subscription.bulk
            batcher = BulkBatcher(self.subscription, path, self.channel, settings)
            self._batchers[path] = batcher
        return await batcher.deliver(message)
