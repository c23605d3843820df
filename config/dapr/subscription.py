"""Declarative Dapr `Subscription` resources: v1alpha1 (one route) and v2alpha1 (routing rules)."""

from __future__ import annotations

from dataclasses import dataclass

from config.dapr.fields import Fields, ResourceMeta, stringify
from config.walk import child

__all__ = ["BulkSubscribe", "RouteRule", "Subscription", "parse_subscription"]

V1 = "dapr.io/v1alpha1"
V2 = "dapr.io/v2alpha1"
_COMMON = ("pubsubname", "topic", "deadLetterTopic", "metadata", "bulkSubscribe")


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Deliver to `path` the events for which the CEL expression `match` holds."""

    match: str
    path: str


@dataclass(frozen=True, slots=True)
class BulkSubscribe:
    enabled: bool = False
    max_messages_count: int = 100
    max_await_duration_ms: int = 1000


@dataclass(frozen=True, slots=True)
class Subscription:
    name: str
    namespace: str
    pubsub_name: str
    topic: str
    rules: tuple[RouteRule, ...]  # tried in order; the first match wins
    default_route: str | None  # when no rule matches (v1alpha1's `route`)
    dead_letter_topic: str | None
    metadata: dict[str, str]
    bulk_subscribe: BulkSubscribe
    scopes: tuple[str, ...]


def parse_subscription(spec: dict[str, object], meta: ResourceMeta, fields: Fields) -> Subscription:
    """The Subscription in `spec`, in either apiVersion's shape; problems go to `fields`."""
    rules: list[RouteRule] = []
    if meta.api_version == V1:
        fields.known_keys(spec, "$.spec", (*_COMMON, "route"))
        default_route: str | None = fields.required_text(spec, "route", "$.spec")
    else:
        fields.known_keys(spec, "$.spec", (*_COMMON, "routes"))
        routes = fields.section(spec, "routes", "$.spec")
        fields.known_keys(routes, "$.spec.routes", ("rules", "default"))
        for i, item in enumerate(fields.items(routes, "rules", "$.spec.routes")):
            where = child("$.spec.routes.rules", i)
            raw = fields.as_mapping(item, where)
            fields.known_keys(raw, where, ("match", "path"))
            rules.append(
                RouteRule(
                    fields.required_text(raw, "match", where),
                    fields.required_text(raw, "path", where),
                )
            )
        default_route = fields.text(routes, "default", "$.spec.routes") or None
        if not rules and default_route is None:
            fields.report("$.spec.routes", "give routing rules, a default route, or both")
    metadata = {
        key: stringify(value) for key, value in fields.section(spec, "metadata", "$.spec").items()
    }
    bulk = fields.section(spec, "bulkSubscribe", "$.spec")
    where = "$.spec.bulkSubscribe"
    fields.known_keys(bulk, where, ("enabled", "maxMessagesCount", "maxAwaitDurationMs"))
    return Subscription(
        name=meta.name,
        namespace=meta.namespace,
        pubsub_name=fields.required_text(spec, "pubsubname", "$.spec"),
        topic=fields.required_text(spec, "topic", "$.spec"),
        rules=tuple(rules),
        default_route=default_route,
        dead_letter_topic=fields.text(spec, "deadLetterTopic", "$.spec") or None,
        metadata=metadata,
        bulk_subscribe=BulkSubscribe(
            enabled=fields.flag(bulk, "enabled", where, False),
            max_messages_count=fields.integer(bulk, "maxMessagesCount", where, 100, minimum=1),
            max_await_duration_ms=fields.integer(
                bulk, "maxAwaitDurationMs", where, 1000, minimum=0
            ),
        ),
        scopes=meta.scopes,
    )
