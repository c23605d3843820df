"""`pubsub.rabbitmq`'s metadata, read and checked without importing aio-pika."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from yarl import URL

from config.dapr.component import Component
from filters.pubsub.broker import PubSubError
from filters.state.metadata import ComponentMetadata

__all__ = ["EXCHANGE_KINDS", "MIN_RECONNECT_WAIT", "RabbitMQSettings", "parse", "ttl_seconds"]

MIN_RECONNECT_WAIT = 0.1  # seconds; Dapr allows 0, which would spin against a dead broker
EXCHANGE_KINDS = ("fanout", "topic", "direct", "headers")


@dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    """Dapr's `pubsub.rabbitmq` metadata, read once."""

    url: URL
    durable: bool
    auto_delete: bool
    auto_ack: bool
    requeue: bool
    persistent: bool
    prefetch: int  # 0: the subscription's concurrency
    reconnect_wait: float
    exchange_kind: str
    dead_letter: bool
    queue_arguments: Mapping[str, int]
    ttl: int | None  # seconds; per-message expiration when the publish names none
    single: bool  # concurrencyMode=single: one handler call at a time
    client_name: str  # the connection's name in RabbitMQ's management views


def _flag(md: ComponentMetadata, key: str, default: bool) -> bool:
    return md.flag(key) if md.text(key, "") else default


def _natural(md: ComponentMetadata, key: str) -> int:
    value = md.integer(key, 0) or 0
    if value < 0:
        raise md.error(key, f"expected a non-negative integer, got {value}")
    return value


def _url(md: ComponentMetadata) -> URL:
    """connectionString (or Dapr's deprecated `host`), else protocol://user:pass@hostname."""
    text = md.text("connectionString", "") or md.text("host", "")
    protocol = md.text("protocol", "")
    if text:
        url = URL(text)
        if url.scheme not in ("amqp", "amqps"):
            raise md.error("connectionString", f"expected an amqp:// or amqps:// URL, got {text!r}")
        if protocol and protocol != url.scheme:
            raise md.error("protocol", f"{protocol!r} does not match the connection string")
        return url
    protocol = protocol or "amqp"
    if protocol not in ("amqp", "amqps"):
        raise md.error("protocol", f"expected amqp or amqps, got {protocol!r}")
    hostname = md.text("hostname", "localhost")
    user = quote(md.text("username", ""), safe="")
    password = quote(md.text("password", ""), safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    return URL(f"{protocol}://{auth}{hostname}")


def _connection_url(md: ComponentMetadata) -> URL:
    """The URL with Dapr's heartBeat (default 10s) unless the connection string sets one."""
    url = _url(md)
    heartbeat = md.duration("heartBeat", 10.0)
    if "heartbeat" in url.query or not heartbeat:
        return url
    return url.update_query(heartbeat=max(1, round(heartbeat)))


def _delivery_persistent(md: ComponentMetadata, durable: bool) -> bool:
    """Dapr's deliveryMode (0 or 1 transient, 2 persistent); unset: persistent when durable."""
    mode = md.integer("deliveryMode", None)
    if mode is None:
        return durable
    if mode not in (0, 1, 2):
        raise md.error("deliveryMode", f"expected 0, 1 or 2, got {mode}")
    return mode == 2


def _exchange_kind(md: ComponentMetadata) -> str:
    kind = md.text("exchangeKind", "fanout").lower()
    if kind not in EXCHANGE_KINDS:
        raise md.error("exchangeKind", f"expected one of {', '.join(EXCHANGE_KINDS)}, got {kind!r}")
    return kind


def _concurrency_single(md: ComponentMetadata) -> bool:
    mode = md.text("concurrencyMode", "parallel").lower()
    if mode not in ("parallel", "single"):
        raise md.error("concurrencyMode", f"expected parallel or single, got {mode!r}")
    return mode == "single"


def _unsupported(md: ComponentMetadata) -> None:
    if _flag(md, "saslExternal", False):
        raise md.error("saslExternal", "SASL EXTERNAL is not supported by meshwire")
    for key in ("caCert", "clientCert", "clientKey"):
        if md.text(key, ""):
            raise md.error(key, "certificates are not supported; use amqps:// with system CAs")


def _queue_arguments(md: ComponentMetadata) -> dict[str, int]:
    arguments = {}
    if max_len := _natural(md, "maxLen"):
        arguments["x-max-length"] = max_len
    if max_len_bytes := _natural(md, "maxLenBytes"):
        arguments["x-max-length-bytes"] = max_len_bytes
    return arguments


def ttl_seconds(value: str, error: Exception) -> int | None:
    """ttlInSeconds (the Component's, or a publish's): None when empty; `error` if not whole
    seconds."""
    if not value:
        return None
    try:
        seconds = int(value)
    except ValueError:
        raise error from None
    if seconds < 0:
        raise error
    return seconds


def parse(component: Component) -> RabbitMQSettings:
    """The settings of a `pubsub.rabbitmq` Component; PubSubError names a bad metadata value."""
    md = ComponentMetadata(component, error=PubSubError, kind="pubsub")
    _unsupported(md)
    durable = _flag(md, "durable", True)
    dead_letter = _flag(md, "enableDeadLetter", False)
    ttl_text = md.text("ttlInSeconds", "")
    bad_ttl = md.error("ttlInSeconds", f"expected whole seconds, got {ttl_text!r}")
    return RabbitMQSettings(
        url=_connection_url(md),
        durable=durable,
        auto_delete=_flag(md, "deletedWhenUnused", False),
        auto_ack=_flag(md, "autoAck", False),
        # At-least-once: a failed message goes back to its queue unless a dead-letter
        # queue is there to take it; an explicit requeueInFailure=false still drops it.
        requeue=_flag(md, "requeueInFailure", not dead_letter),
        persistent=_delivery_persistent(md, durable),
        prefetch=_natural(md, "prefetchCount"),
        reconnect_wait=max(
            MIN_RECONNECT_WAIT,
            md.duration("reconnectWaitSeconds", md.duration("reconnectWait", 3.0)),
        ),
        exchange_kind=_exchange_kind(md),
        dead_letter=dead_letter,
        queue_arguments=_queue_arguments(md),
        ttl=ttl_seconds(ttl_text, bad_ttl),
        single=_concurrency_single(md),
        client_name=md.text("clientName", f"meshwire {component.name}"),
    )
