"""The CloudEvent envelope, byte for byte, and the routing and subscription parsing around it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from filters.pubsub.envelope import (
    EnvelopeError,
    Overrides,
    build_envelope,
    expired,
    new_event_id,
    parse_event,
    synthesize_raw_event,
)
from filters.pubsub.routing import RouteError, Routes, compile_rule
from filters.pubsub.subscriptions import merge, parse_programmatic

NOW = datetime(2026, 12, 4, 6, 30, 15, tzinfo=UTC)
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def overrides(**fields: str) -> Overrides:
    return Overrides.from_metadata({f"cloudevent.{k}": v for k, v in fields.items()}, TRACE, "k=v")


def test_a_json_body_is_embedded_byte_for_byte() -> None:
    data = build_envelope(
        b'{"price": 1.10, "n": 12345678901234567890}',
        "application/json",
        topic="orders",
        pubsub="pubsub",
        source="checkout",
        overrides=overrides(id="e1"),
        now=NOW,
    )
    assert data == (
        b'{"id":"e1","source":"checkout","type":"com.dapr.event.sent","specversion":"1.0",'
        b'"datacontenttype":"application/json",'
        b'"data":{"price": 1.10, "n": 12345678901234567890},'
        b'"topic":"orders","pubsubname":"pubsub",'
        b'"traceid":"' + TRACE.encode() + b'","traceparent":"' + TRACE.encode() + b'",'
        b'"tracestate":"k=v","time":"2026-12-04T06:30:15Z"}'
    )


def test_content_types_choose_data_or_data_base64() -> None:
    def event(body: bytes, content_type: str | None) -> dict[str, object]:
        raw = build_envelope(
            body, content_type, topic="t", pubsub="p", source="a", overrides=overrides(), now=NOW
        )
        value: dict[str, object] = json.loads(raw)
        return value

    assert event(b"hi", None)["datacontenttype"] == "text/plain"
    assert event(b"hi", None)["data"] == "hi"
    assert event(b"<a/>", "application/xml")["data"] == "<a/>"
    assert event(b"\x00\x01", "application/octet-stream")["data_base64"] == "AAE="
    assert "data" not in event(b"\x00\x01", "application/octet-stream")
    assert event(b"{oops", "application/json")["data"] == "{oops"
    assert event(b'{"a":1}', "application/vnd.x+json; charset=utf-8")["data"] == {"a": 1}


def test_overrides_ttl_and_subject() -> None:
    raw = build_envelope(
        b"x",
        "text/plain",
        topic="t",
        pubsub="p",
        source="a",
        overrides=Overrides.from_metadata(
            {
                "CloudEvent.Source": "elsewhere",
                "cloudevent.type": "kind",
                "cloudevent.subject": "s",
            },
            None,
            None,
        ),
        ttl_seconds=30,
        now=NOW,
    )
    event = json.loads(raw)
    assert (event["source"], event["type"], event["subject"]) == ("elsewhere", "kind", "s")
    assert event["expiration"] == "2026-12-04T06:30:45Z"
    assert "traceparent" not in event
    assert uuid.UUID(event["id"]).version == 4


def test_an_app_s_own_cloudevent_is_completed_not_replaced() -> None:
    body = b'{"id":"mine","source":"app","data":{"x":1},"traceparent":"00-theirs","ext":"kept"}'
    event = json.loads(
        build_envelope(
            body,
            "application/cloudevents+json",
            topic="t",
            pubsub="p",
            source="a",
            overrides=overrides(),
            now=NOW,
        )
    )
    assert event["id"] == "mine"
    assert event["source"] == "app"
    assert event["traceparent"] == "00-theirs"  # the app's own trace context stays
    assert (event["topic"], event["pubsubname"], event["ext"]) == ("t", "p", "kept")
    assert (event["specversion"], event["type"]) == ("1.0", "com.dapr.event.sent")
    assert event["time"] == "2026-12-04T06:30:15Z"
    with pytest.raises(EnvelopeError):
        build_envelope(
            b"[1]",
            "application/cloudevents+json",
            topic="t",
            pubsub="p",
            source="a",
            overrides=overrides(),
        )


def test_event_ids_are_version_4_uuids() -> None:
    ids = {new_event_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


def test_delivery_side_parsing_and_expiry() -> None:
    assert parse_event(b'{"id":"1"}') == {"id": "1"}
    for bad in (b"not json", b"[1,2]"):
        with pytest.raises(EnvelopeError):
            parse_event(bad)
    assert expired({"expiration": "2026-12-04T06:30:14Z"}, NOW)
    assert not expired({"expiration": "2026-12-04T06:30:16Z"}, NOW)
    assert not expired({"expiration": "garbage"}, NOW)
    assert not expired({}, NOW)
    raw = synthesize_raw_event(b"\xff", "t", "p", {"traceparent": TRACE})
    assert (raw["data_base64"], raw["source"], raw["traceparent"]) == ("/w==", "Dapr", TRACE)


def test_routes_take_the_first_rule_that_holds() -> None:
    routes = Routes(
        (
            compile_rule('event.type == "a"', "/a"),
            compile_rule("event.data.n > 1", "/big"),
        ),
        "/default",
    )
    assert routes.choose({"type": "a", "data": {"n": 5}}) == "/a"
    assert routes.choose({"type": "b", "data": {"n": 5}}) == "/big"
    assert routes.choose({"type": "b", "data": {"n": 0}}) == "/default"
    assert Routes((compile_rule("", "/all"),), None).choose({}) == "/all"
    assert Routes((), None).choose({}) is None
    with pytest.raises(RouteError):
        Routes((compile_rule("event.data.n", "/x"),), None).choose({"data": {"n": 1}})
    with pytest.raises(RouteError):
        compile_rule("event.type ==", "/x")


def test_programmatic_subscriptions_in_both_shapes() -> None:
    body = json.dumps(
        [
            {"pubsubname": "p", "topic": "v1", "route": "/v1", "deadLetterTopic": "dead"},
            {
                "pubsubname": "p",
                "topic": "v2",
                "routes": {
                    "rules": [{"match": 'event.type == "x"', "path": "/x"}],
                    "default": "/d",
                },
                "metadata": {"rawPayload": "true"},
                "bulkSubscribe": {"enabled": True, "maxMessagesCount": 5},
            },
            {"pubsubname": "p", "topic": "no-route"},
            {
                "pubsubname": "p",
                "topic": "bad-bulk",
                "route": "/b",
                "bulkSubscribe": {"enabled": True, "maxMessagesCount": "many"},
            },
            {"pubsubname": "p", "topic": "bad", "routes": {"rules": [{"match": "(", "path": "/"}]}},
        ]
    ).encode()
    v1, v2 = parse_programmatic(body)
    assert (v1.topic, v1.routes.default, v1.dead_letter_topic) == ("v1", "/v1", "dead")
    assert (v2.routes.default, v2.routes.rules[0].path, v2.raw_payload) == ("/d", "/x", True)
    assert (v2.bulk.enabled, v2.bulk.max_messages_count) == (True, 5)
    assert v2.describe()["rules"] == [
        {"match": 'event.type == "x"', "path": "/x"},
        {"match": "", "path": "/d"},
    ]
    assert merge([v1], [v1, v2]) == [v1, v2]
