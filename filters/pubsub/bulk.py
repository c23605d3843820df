"""Bulk subscribe: messages gathered into one POST of entries, each answered by its own status."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio

from config.dapr.subscription import BulkSubscribe
from filters.pubsub.broker import Message
from filters.pubsub.delivery import DeliveryFailed, Outcome
from filters.pubsub.envelope import CLOUDEVENTS_JSON, EnvelopeError, expired, parse_event
from filters.pubsub.http_app import HttpAppChannel
from filters.pubsub.subscriptions import TopicSubscription

__all__ = ["BulkBatcher", "BulkRoutes", "statuses_of_http"]

log = logging.getLogger("meshwire.pubsub")


@dataclass(slots=True)
class _Entry:
    message: Message
    entry_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    outcome: Outcome = Outcome.RETRY
    done: trio.Event = field(default_factory=trio.Event)


def statuses_of_http(status: int, body: bytes, entry_ids: Sequence[str]) -> dict[str, Outcome]:
    """daprd's reading of a bulk answer: 404 drops all, another non-2xx retries all; in a 2xx,
    each entry's status, RETRY for an entry missing or without one."""
    if status == 404:
        return dict.fromkeys(entry_ids, Outcome.DROP)
    if not 200 <= status < 300:
        return dict.fromkeys(entry_ids, Outcome.RETRY)
    outcomes = dict.fromkeys(entry_ids, Outcome.RETRY)
    try:
        reply = json.loads(body) if body.strip() else {}
    except ValueError:
        return outcomes
    statuses = reply.get("statuses") if isinstance(reply, dict) else None
    for item in statuses if isinstance(statuses, list) else []:
        if not isinstance(item, dict) or item.get("entryId") not in outcomes:
            continue
        text = str(item.get("status") or "").upper()
        if text == "SUCCESS":
            outcomes[item["entryId"]] = Outcome.SUCCESS
        elif text == "DROP":
            outcomes[item["entryId"]] = Outcome.DROP
    return outcomes


class BulkBatcher:
    """Gathers the messages the broker hands over concurrently into batches of at most
    `maxMessagesCount`, waiting at most `maxAwaitDurationMs` for a batch to fill. The first
    message of a batch leads it: it waits, sends, and wakes the others with their outcomes."""

    def __init__(
        self,
        subscription: TopicSubscription,
        path: str,
        channel: HttpAppChannel,
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
        sub = self.subscription
        body = {
            "id": str(uuid.uuid4()),
            "type": "com.dapr.event.sent.bulk",
            "topic": sub.topic,
            "pubsubname": sub.pubsub,
            "metadata": {},
            "entries": [
                {
                    "entryId": entry.entry_id,
                    "event": event,
                    "contentType": CLOUDEVENTS_JSON,
                    "metadata": dict(entry.message.metadata),
                }
                for entry, event in live
            ],
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            status, reply = await self.channel.post(self.path, data, "application/json", [])
        except DeliveryFailed as exc:
            log.warning("bulk delivery of %s failed: %s", sub.topic, exc)
            return  # every entry keeps RETRY
        outcomes = statuses_of_http(status, reply, [entry.entry_id for entry, _ in live])
        for entry, _ in live:
            entry.outcome = outcomes[entry.entry_id]


class BulkRoutes:
    """One batcher per route: entries are routed one by one, then gathered per path."""

    def __init__(self, subscription: TopicSubscription, channel: HttpAppChannel) -> None:
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
