"""`pubsub.jetstream`'s metadata, read and checked without importing nats-py."""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import re
import ssl
from dataclasses import dataclass

from config.dapr.component import Component
from config.dapr.duration import parse_go_duration
from filters.pubsub.broker import PubSubError
from filters.state.metadata import ComponentMetadata

__all__ = ["DEFAULT_CONNECTION_NAME", "JetStreamSettings", "jetstream_name", "parse"]

DEFAULT_CONNECTION_NAME = "meshwire - pubsub.jetstream"

# Dapr's deliverPolicy names → JetStream's (the values of nats.js.api.DeliverPolicy).
BY_START_SEQUENCE, BY_START_TIME = "by_start_sequence", "by_start_time"
DELIVER_POLICIES = {
    "all": "all",
    "last": "last",
    "new": "new",
    "sequence": BY_START_SEQUENCE,
    "time": BY_START_TIME,
}

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 200


def jetstream_name(raw: str) -> str:
    """A valid stream or consumer name for `raw`: unsafe characters become `_`, and a short
    hash of `raw` keeps altered names distinct."""
    safe = _NAME_UNSAFE.sub("_", raw)
    if safe == raw and len(raw) <= MAX_NAME:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{safe[: MAX_NAME - 11]}-{digest}"


@dataclass(frozen=True, slots=True)
class JetStreamSettings:
    """Dapr's `pubsub.jetstream` metadata, checked (the policy as a nats DeliverPolicy value)."""

    url: str
    connection_name: str
    token: str | None
    credentials: str | None  # a .creds file's text, for nats RawCredentials
    tls: ssl.SSLContext | None
    stream_name: str | None
    durable_name: str | None
    deliver_policy: str
    start_sequence: int | None
    start_time: datetime.datetime | None
    ack_wait: float | None
    max_deliver: int | None
    backoff: list[float] | None
    max_ack_pending: int | None
    replicas: int | None
    memory_storage: bool
    domain: str | None
    api_prefix: str | None


def parse(component: Component) -> JetStreamSettings:
    """The settings of a `pubsub.jetstream` Component; PubSubError names a bad metadata value."""
    meta = ComponentMetadata(component, error=PubSubError, kind="pubsub")
    url = meta.text("natsURL", "")
    if not url:
        raise meta.error("natsURL", "required (e.g. nats://localhost:4222)")
    stream = meta.text("streamName", "")
    if stream and jetstream_name(stream) != stream:
        raise meta.error("streamName", f"{stream!r} is not a valid JetStream stream name")
    policy, sequence, start = _deliver_policy(meta)
    ack_policy = meta.text("ackPolicy", "explicit").lower()
    if ack_policy != "explicit":
        raise meta.error("ackPolicy", "only explicit: a message is acked after the app took it")
    return JetStreamSettings(
        url=url,
        connection_name=meta.text("name", DEFAULT_CONNECTION_NAME),
        token=meta.text("token", "") or None,
        credentials=_credentials(meta),
        tls=_tls(meta),
        stream_name=stream or None,
        durable_name=meta.text("durableName", "") or None,
        deliver_policy=policy,
        start_sequence=sequence,
        start_time=start,
        ack_wait=meta.optional_duration("ackWait"),
        max_deliver=meta.integer("maxDeliver", None),
        backoff=_backoff(meta),
        max_ack_pending=meta.integer("maxAckPending", None),
        replicas=meta.integer("replicas", None),
        memory_storage=meta.flag("memoryStorage"),
        domain=meta.text("domain", "") or None,
        api_prefix=meta.text("apiPrefix", "") or None,
    )


def _deliver_policy(
    meta: ComponentMetadata,
) -> tuple[str, int | None, datetime.datetime | None]:
    sequence = meta.integer("startSequence", None)
    seconds = meta.integer("startTime", None)
    start = None
    if seconds is not None:
        start = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    default = "sequence" if sequence else "time" if start else "new"
    name = meta.text("deliverPolicy", default).lower()
    policy = DELIVER_POLICIES.get(name)
    if policy is None:
        raise meta.error("deliverPolicy", f"{name!r} is not one of {', '.join(DELIVER_POLICIES)}")
    if policy == BY_START_SEQUENCE and not sequence:
        raise meta.error("startSequence", "deliverPolicy sequence needs a start sequence")
    if policy == BY_START_TIME and start is None:
        raise meta.error("startTime", "deliverPolicy time needs a start time (Unix seconds)")
    keep_sequence = sequence if policy == BY_START_SEQUENCE else None
    keep_start = start if policy == BY_START_TIME else None
    return policy, keep_sequence, keep_start


def _backoff(meta: ComponentMetadata) -> list[float] | None:
    raw = meta.text("backOff", "")
    if not raw:
        return None
    try:
        return [parse_go_duration(part.strip()) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise meta.error("backOff", str(exc)) from None


def _credentials(meta: ComponentMetadata) -> str | None:
    jwt, seed = meta.text("jwt", ""), meta.text("seedKey", "")
    if bool(jwt) != bool(seed):
        raise meta.error("jwt" if seed else "seedKey", "jwt and seedKey go together")
    if not jwt:
        return None
    if importlib.util.find_spec("nkeys") is None:
        raise meta.error("jwt", "JWT authentication needs the Python package nkeys")
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
    )


def _tls(meta: ComponentMetadata) -> ssl.SSLContext | None:
    cert, key = meta.text("tls_client_cert", ""), meta.text("tls_client_key", "")
    if bool(cert) != bool(key):
        raise meta.error("tls_client_cert", "tls_client_cert and tls_client_key go together")
    if not cert:
        return None
    context = ssl.create_default_context()
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise meta.error("tls_client_cert", str(exc)) from None
    return context
