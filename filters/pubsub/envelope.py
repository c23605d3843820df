"""CloudEvents 1.0 envelopes exactly as Dapr builds them on publish and reads them on delivery."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from filters.dapr.params import is_json_content_type

__all__ = [
    "CLOUDEVENTS_JSON",
    "EnvelopeError",
    "Overrides",
    "build_envelope",
    "parse_event",
    "synthesize_raw_event",
]

CLOUDEVENTS_JSON = "application/cloudevents+json"
OCTET_STREAM = "application/octet-stream"
DEFAULT_CONTENT_TYPE = "text/plain"
DEFAULT_TYPE = "com.dapr.event.sent"
SPEC_VERSION = "1.0"
_OVERRIDABLE = ("id", "source", "type", "subject", "traceid", "traceparent", "tracestate")
_json = msgspec.json.Decoder()
_encode = msgspec.json.encode


class EnvelopeError(ValueError):
    """The body cannot become (or be read as) a CloudEvent."""


@dataclass(frozen=True, slots=True)
class Overrides:
    """What the publisher's `metadata.cloudevent.*` keys and trace context put in the envelope."""

    fields: Mapping[str, str]  # id/source/type/subject/trace*: given by the caller
    traceparent: str | None
    tracestate: str | None

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, str], traceparent: str | None, tracestate: str | None
    ) -> Overrides:
        """Dapr decodes `cloudevent.<field>` keys case-insensitively."""
        fields: dict[str, str] = {}
        for key, value in metadata.items():
            lowered = key.lower()
            if lowered.startswith("cloudevent."):
                name = lowered[len("cloudevent.") :]
                if name in _OVERRIDABLE:
                    fields[name] = value
        return cls(fields, traceparent, tracestate)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Clock:
    """`time` at second precision, formatted once per second (strftime showed in profiles)."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._text


_clock = _Clock()
_ids = random.Random()  # event ids need to be unique, not unpredictable: no syscall per id


def new_event_id() -> str:
    """A random (version 4) UUID, as Dapr's ids are."""
    n = _ids.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_envelope(
    body: bytes,
    content_type: str | None,
    *,
    topic: str,
    pubsub: str,
    source: str,
    overrides: Overrides,
    ttl_seconds: int | None = None,
    now: datetime | None = None,
) -> bytes:
    """The serialized CloudEvent for a publish of `body` (Dapr's NewCloudEvent).

    A body sent as application/cloudevents+json is the app's own event: its fields stay, and
    only the missing ones are filled in. `ttl_seconds` (set only when the broker cannot expire
    messages itself) adds `expiration`."""
    if content_type is not None and content_type.partition(";")[0].strip().lower() == (
        CLOUDEVENTS_JSON
    ):
        moment = now or _now()
        return _complete_user_event(body, topic, pubsub, source, overrides, ttl_seconds, moment)
    media = content_type or DEFAULT_CONTENT_TYPE
    given = overrides.fields
    traceparent = given.get("traceparent") or given.get("traceid") or overrides.traceparent
    event: dict[str, object] = {
        "id": given.get("id") or new_event_id(),
        "source": given.get("source") or source,
        "type": given.get("type") or DEFAULT_TYPE,
        "specversion": SPEC_VERSION,
        "datacontenttype": media,
    }
    if media.partition(";")[0].strip().lower() == OCTET_STREAM:
        event["data_base64"] = base64.b64encode(body).decode("ascii")
    elif is_json_content_type(media):
        event["data"] = _json_or_text(body)
    else:
        event["data"] = body.decode("utf-8", "replace")
    event["topic"] = topic
    event["pubsubname"] = pubsub
    if traceparent:
        event["traceid"] = traceparent
        event["traceparent"] = traceparent
    tracestate = given.get("tracestate") or overrides.tracestate
    if tracestate:
        event["tracestate"] = tracestate
    event["time"] = _rfc3339(now) if now is not None else _clock.now()
    if "subject" in given:
        event["subject"] = given["subject"]
    if ttl_seconds is not None:
        expires = (now or _now()) + timedelta(seconds=ttl_seconds)
        event["expiration"] = _rfc3339(expires)
    return _encode(event)


def _json_or_text(body: bytes) -> object:
    """The body as JSON, byte for byte (numbers keep their precision); as a string if it is
    not valid JSON."""
    try:
        _json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # nested too deep is not JSON to us either
        return body.decode("utf-8", "replace")
    return msgspec.Raw(body.strip())


def _complete_user_event(
    body: bytes,
    topic: str,
    pubsub: str,
    source: str,
    overrides: Overrides,
    ttl_seconds: int | None,
    moment: datetime,
) -> bytes:
    try:
        event = _json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EnvelopeError(f"cannot create cloudevent: body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise EnvelopeError("cannot create cloudevent: body is not a JSON object")
    event["topic"] = topic
    event["pubsubname"] = pubsub
    event.setdefault("source", source)
    event.setdefault("type", DEFAULT_TYPE)
    event.setdefault("specversion", SPEC_VERSION)
    event.setdefault("time", _rfc3339(moment))
    if overrides.traceparent and "traceparent" not in event and "traceid" not in event:
        event["traceid"] = overrides.traceparent
        event["traceparent"] = overrides.traceparent
        if overrides.tracestate and "tracestate" not in event:
            event["tracestate"] = overrides.tracestate
    if ttl_seconds is not None and "expiration" not in event:
        event["expiration"] = _rfc3339(moment + timedelta(seconds=ttl_seconds))
    return _encode(event)


def synthesize_raw_event(
    data: bytes, topic: str, pubsub: str, metadata: Mapping[str, str]
) -> dict[str, object]:
    """The CloudEvent Dapr wraps around a raw (rawPayload) message before delivery."""
    event: dict[str, object] = {
        "id": new_event_id(),
        "specversion": SPEC_VERSION,
        "datacontenttype": OCTET_STREAM,
        "source": "Dapr",
        "type": DEFAULT_TYPE,
        "topic": topic,
        "pubsubname": pubsub,
        "data_base64": base64.b64encode(data).decode("ascii"),
    }
    for name in ("traceid", "traceparent", "tracestate"):
        if metadata.get(name):
            event[name] = metadata[name]
    return event


def parse_event(data: bytes) -> dict[str, object]:
    """A delivered message as a CloudEvent; EnvelopeError if it is not a JSON object."""
    try:
        event = _json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EnvelopeError(f"failed to deserialize cloudevent: {exc}") from None
    if not isinstance(event, dict):
        raise EnvelopeError("failed to deserialize cloudevent: not a JSON object")
    return event


def expired(event: Mapping[str, object], now: datetime | None = None) -> bool:
    """Whether the event's `expiration` (RFC 3339) has passed."""
    raw = event.get("expiration")
    if not isinstance(raw, str) or not raw:
        return False
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment < (now or datetime.now(UTC))


def encode_event(event: Mapping[str, object]) -> bytes:
    return _encode(event)
