"""`state.redis`'s metadata, read and checked without importing the redis client."""

from __future__ import annotations

import os
from dataclasses import dataclass

from config.dapr.component import Component
from filters.state.metadata import ComponentMetadata

__all__ = ["DEFAULT_POOL_SIZE", "RedisSettings", "parse"]

DEFAULT_POOL_SIZE = 10 * (os.cpu_count() or 1)  # go-redis: 10 connections per CPU


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Dapr's `state.redis` metadata (components-contrib redis settings), with its defaults."""

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    max_retries: int = 3
    max_retry_backoff: float = 2.0
    dial_timeout: float = 5.0
    read_timeout: float = 3.0
    pool_size: int = DEFAULT_POOL_SIZE
    default_ttl: int | None = None  # ttlInSeconds: for saves that give none

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse(component: Component) -> RedisSettings:
    """The settings of a `state.redis` Component; StateError names a bad metadata value."""
    meta = ComponentMetadata(component)
    if meta.text("redisType", "node").lower() != "node" or meta.flag("failover"):
        raise meta.error("redisType", "only a single node is supported (no cluster/sentinel)")
    host, port = _split_host(meta.text("redisHost", ""), meta)
    ttl = meta.integer("ttlInSeconds", None)
    retries = meta.integer("redisMaxRetries", None)
    if retries is None:
        retries = meta.integer("maxRetries", 3) or 0
    return RedisSettings(
        host=host,
        port=port,
        username=meta.text("redisUsername", "") or None,
        password=meta.text("redisPassword", "") or None,
        db=meta.integer("redisDB", 0) or 0,
        tls=meta.flag("enableTLS"),
        max_retries=max(0, retries),
        max_retry_backoff=meta.duration("maxRetryBackoff", 2.0),
        dial_timeout=meta.duration("dialTimeout", 5.0),
        read_timeout=meta.duration("readTimeout", 3.0),
        pool_size=meta.integer("poolSize", None) or DEFAULT_POOL_SIZE,
        default_ttl=ttl if ttl is not None and ttl > 0 else None,
    )


def _split_host(text: str, meta: ComponentMetadata) -> tuple[str, int]:
    if not text:
        raise meta.error("redisHost", "is required (host:port)")
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port:
        host, port = text, "6379"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise meta.error("redisHost", f"expected host:port, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)
