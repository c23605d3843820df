"""Subscriptions as the runtime runs them: declarative resources and the app's /dapr/subscribe."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from config.dapr.subscription import BulkSubscribe
from config.dapr.subscription import Subscription as SubscriptionResource
from filters.dapr.params import metadata_value
from filters.pubsub.routing import CompiledRule, RouteError, Routes, compile_rule

__all__ = [
    "SubscriptionError",
    "TopicSubscription",
    "from_resource",
    "merge",
    "parse_programmatic",
]

log = logging.getLogger("meshwire.pubsub")

Kind = Literal["DECLARATIVE", "PROGRAMMATIC", "STREAMING"]


class SubscriptionError(ValueError):
    """A subscription the app or a resource gave that cannot be run."""


@dataclass(frozen=True, slots=True)
class TopicSubscription:
    pubsub: str
    topic: str
    routes: Routes
    dead_letter_topic: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    bulk: BulkSubscribe = field(default_factory=BulkSubscribe)
    kind: Kind = "PROGRAMMATIC"

    def flag(self, key: str) -> bool:
        return metadata_value(self.metadata, key).strip().lower() in ("true", "1", "t")

    @property
    def raw_payload(self) -> bool:
        return self.flag("rawPayload")

    def describe(self) -> dict[str, object]:
        """As /v1.0/metadata lists it."""
        rules = [{"match": r.match, "path": r.path} for r in self.routes.rules]
        if self.routes.default is not None:
            rules.append({"match": "", "path": self.routes.default})
        return {
            "pubsubname": self.pubsub,
            "topic": self.topic,
            "metadata": dict(self.metadata),
            "rules": rules,
            "deadLetterTopic": self.dead_letter_topic or "",
            "type": self.kind,
        }


def _routes(rules: Sequence[tuple[str, str]], default: str | None) -> Routes:
    return Routes(tuple(compile_rule(match, path) for match, path in rules), default)


def from_resource(resource: SubscriptionResource) -> TopicSubscription:
    """A declarative Subscription (v1alpha1 route or v2alpha1 routes); RouteError if a rule
    does not compile."""
    return TopicSubscription(
        pubsub=resource.pubsub_name,
        topic=resource.topic,
        routes=_routes([(r.match, r.path) for r in resource.rules], resource.default_route),
        dead_letter_topic=resource.dead_letter_topic,
        metadata=dict(resource.metadata),
        bulk=resource.bulk_subscribe,
        kind="DECLARATIVE",
    )


def parse_programmatic(body: bytes) -> list[TopicSubscription]:
    """The app's answer to GET /dapr/subscribe. An entry that cannot be run (no pubsub name,
    no topic, no route, a bad rule) is dropped with a warning, as daprd does."""
    try:
        raw = json.loads(body) if body.strip() else []
    except ValueError as exc:
        raise SubscriptionError(f"/dapr/subscribe did not return JSON: {exc}") from None
    if not isinstance(raw, list):
        raise SubscriptionError("/dapr/subscribe did not return a JSON array")
    found: list[TopicSubscription] = []
    for item in raw:
        try:
            found.append(_programmatic(item))
        except (SubscriptionError, RouteError, ValueError, TypeError) as exc:
            log.warning("ignoring a subscription from /dapr/subscribe: %s", exc)
    return found


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _programmatic(item: object) -> TopicSubscription:
    if not isinstance(item, dict):
        raise SubscriptionError("an entry is not an object")
    pubsub, topic = _text(item.get("pubsubname")), _text(item.get("topic"))
    if not pubsub or not topic:
        raise SubscriptionError(f"pubsubname and topic are required: {item}")
    rules: list[CompiledRule] = []
    default = _text(item.get("route")) or None
    routes = item.get("routes")
    if isinstance(routes, dict):
        for rule in routes.get("rules") or []:
            if isinstance(rule, dict) and _text(rule.get("path")):
                rules.append(compile_rule(_text(rule.get("match")), _text(rule.get("path"))))
        default = _text(routes.get("default")) or default
    if not rules and default is None:
        raise SubscriptionError(f"topic {topic} on {pubsub} has no route")
    metadata = item.get("metadata")
    bulk_raw = item.get("bulkSubscribe") or {}
    bulk = BulkSubscribe()
    if isinstance(bulk_raw, dict):
        bulk = BulkSubscribe(
            enabled=bool(bulk_raw.get("enabled", False)),
            max_messages_count=int(bulk_raw.get("maxMessagesCount") or 100),
            max_await_duration_ms=int(bulk_raw.get("maxAwaitDurationMs") or 1000),
        )
    return TopicSubscription(
        pubsub=pubsub,
        topic=topic,
        routes=Routes(tuple(rules), default),
        dead_letter_topic=_text(item.get("deadLetterTopic")) or None,
        metadata=_strings(metadata),
        bulk=bulk,
        kind="PROGRAMMATIC",
    )


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def merge(
    declarative: Sequence[TopicSubscription], programmatic: Sequence[TopicSubscription]
) -> list[TopicSubscription]:
    """One subscription per (pubsub, topic): a declarative one wins over the app's own."""
    chosen: dict[tuple[str, str], TopicSubscription] = {}
    for sub in (*declarative, *programmatic):
        key = (sub.pubsub, sub.topic)
        if key in chosen:
            log.warning(
                "topic %s on pubsub %s is subscribed twice; keeping the %s subscription",
                sub.topic,
                sub.pubsub,
                chosen[key].kind.lower(),
            )
            continue
        chosen[key] = sub
    return list(chosen.values())
