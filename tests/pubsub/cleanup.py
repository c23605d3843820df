"""Purge what the suites and the bench leave on the shared services: their test topics' streams."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tests.pubsub.brokers import TEST_TOPIC_PREFIX


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _purge_redis() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        keys = list(client.scan_iter(match=f"{TEST_TOPIC_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def _purge_nats() -> None:
    import nats

    client = await nats.connect(
        "nats://127.0.0.1:4222", connect_timeout=2, max_reconnect_attempts=0
    )
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            subjects = info.config.subjects or []
            if subjects and all(s.startswith(TEST_TOPIC_PREFIX) for s in subjects):
                assert info.config.name is not None
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


def purge_test_topics() -> None:
    """Redis streams and NATS JetStream streams of topics named TEST_TOPIC_PREFIX*; a
    service that is not there is skipped (this is housekeeping, never a test)."""
    if _reachable(6379):
        with contextlib.suppress(Exception):
            _purge_redis()
    if _reachable(4222):
        with contextlib.suppress(Exception):
            asyncio.run(_purge_nats())
