"""`pubsub.redis`'s metadata, read and checked without importing the redis client."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from config.dapr.component import Component
from config.dapr.duration import parse_go_duration
from filters.pubsub.broker import PubSubError
from filters.state.metadata import ComponentMetadata

__all__ = ["DEFAULT_POOL_SIZE", "RedisPubSubSettings"]

DEFAULT_POOL_SIZE = 10 * (os.cpu_count() or 1)  # go-redis: 10 connections per CPU

_MILLIS = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class RedisPubSubSettings:
    """Dapr's `pubsub.redis` metadata (components-contrib redis settings), with its defaults."""

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    tls_verify: bool = True
    max_retries: int = 3
    min_retry_interval: float = 0.008
    max_retry_interval: float = 0.512
    dial_timeout: float = 5.0
    read_timeout: float | None = 3.0  # None: no socket timeout ("-1")
    pool_size: int = DEFAULT_POOL_SIZE
    processing_timeout: float = 60.0  # a pending entry idle this long goes to another consumer
    redeliver_interval: float = 15.0  # how often pending entries are checked
    queue_depth: int = 100  # entries fetched per read / claim
    max_len_approx: int | None = None  # XADD MAXLEN ~
    stream_ttl: float | None = None  # XADD MINID ~ (now - ttl)
    ack_on_error: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def redelivers(self) -> bool:
        """Dapr turns redelivery off when either interval is 0."""
        return self.processing_timeout > 0 and self.redeliver_interval > 0

    @property
    def block(self) -> float:
        """How long one XREADGROUP waits for entries (Dapr: the read timeout)."""
        return self.read_timeout or 3.0

    @classmethod
    def parse(cls, component: Component) -> RedisPubSubSettings:
        meta = ComponentMetadata(component, error=PubSubError, kind="pubsub")
        if meta.text("redisType", "node").lower() != "node" or meta.flag("failover"):
            raise meta.error("redisType", "only a single node is supported (no cluster/sentinel)")
        host, port = _address(meta)
        _count(meta, "concurrency", 10)  # Dapr's worker count: checked; requests bound ours
        retries = meta.integer("redisMaxRetries", 3)
        read_timeout = _millis(meta, "readTimeout", 3.0, negative_ok=True)
        return cls(
            host=host,
            port=port,
            username=meta.text("redisUsername", "") or None,
            password=meta.text("redisPassword", "") or None,
            db=_count(meta, "redisDB", 0),
            tls=meta.flag("enableTLS"),
            tls_verify=not meta.flag("insecureSkipTLSVerify"),
            max_retries=max(0, retries if retries is not None else 3),
            min_retry_interval=max(0.0, _millis(meta, "redisMinRetryInterval", 0.008, True)),
            max_retry_interval=max(0.0, _millis(meta, "redisMaxRetryInterval", 0.512, True)),
            dial_timeout=_millis(meta, "dialTimeout", 5.0),
            read_timeout=read_timeout if read_timeout > 0 else None,
            pool_size=_count(meta, "poolSize", 0) or DEFAULT_POOL_SIZE,
            processing_timeout=_millis(meta, "processingTimeout", 60.0),
            redeliver_interval=_millis(meta, "redeliverInterval", 15.0),
            queue_depth=_count(meta, "queueDepth", 100) or 100,
            max_len_approx=_count(meta, "maxLenApprox", 0) or None,
            stream_ttl=_millis(meta, "streamTTL", 0.0) or None,
            ack_on_error=meta.flag("ackOnError"),
        )


def _millis(meta: ComponentMetadata, key: str, default: float, negative_ok: bool = False) -> float:
    """Seconds in a Dapr redis duration: a bare integer counts milliseconds, else a Go duration.
    With `negative_ok`, a negative integer passes through as -1 (Dapr's "off")."""
    value = meta.text(key, "")
    if not value:
        return default
    if _MILLIS.fullmatch(value):
        millis = int(value)
        if millis >= 0:
            return millis / 1000
        if negative_ok:
            return -1.0
        raise meta.error(key, f"must not be negative, got {value!r}")
    try:
        return parse_go_duration(value)
    except ValueError as exc:
        raise meta.error(key, str(exc)) from None


def _count(meta: ComponentMetadata, key: str, default: int) -> int:
    found = meta.integer(key, default)
    if found is None or found < 0:
        raise meta.error(key, f"must be a whole number >= 0, got {meta.text(key, '')!r}")
    return found


def _address(meta: ComponentMetadata) -> tuple[str, int]:
    """redisHost "host:port" (or "[v6]:port"); a bare host takes redisPort, else 6379."""
    text = meta.text("redisHost", "")
    if not text:
        raise meta.error("redisHost", "is required (host:port)")
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port or (":" in host and not host.startswith("[")):
        host, port = text, meta.text("redisPort", "6379")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise meta.error("redisHost", f"expected host:port, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)
