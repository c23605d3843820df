"""Purge what the suites and the bench leave on the shared services: their test topics' streams."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess

from tests.pubsub.brokers import TEST_TOPIC_PREFIX

# RabbitMQ queues and exchanges cannot be listed over AMQP: the suites use a virtual host of
# their own on the shared node, made fresh once per session and deleted afterwards. Named per
# process: two suites at once on one node (two checkouts) must not delete each other's.
RABBITMQ_VHOST = f"mwtest-{os.getpid()}"
_rabbitmq_ready: list[str | None] = []  # the one answer of this session, once asked


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


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )


def ensure_rabbitmq_vhost() -> str | None:
    """The suites' vhost, made fresh (what an interrupted session left goes with the old one);
    None when it is ready, else why it is not."""
    if not _rabbitmq_ready:
        if shutil.which("rabbitmqctl") is None:
            _rabbitmq_ready.append("rabbitmqctl (Debian's rabbitmq-server) is not installed")
        else:
            _rabbitmqctl("delete_vhost", RABBITMQ_VHOST)
            made = _rabbitmqctl("add_vhost", RABBITMQ_VHOST)
            allowed = _rabbitmqctl(
                "set_permissions", "-p", RABBITMQ_VHOST, "guest", ".*", ".*", ".*"
            )
            failed = next((r for r in (made, allowed) if r.returncode != 0), None)
            _rabbitmq_ready.append(
                None if failed is None else f"rabbitmqctl failed: {failed.stderr.strip()}"
            )
    return _rabbitmq_ready[0]


def drop_rabbitmq_vhost() -> None:
    if _rabbitmq_ready == [None]:
        _rabbitmqctl("delete_vhost", RABBITMQ_VHOST)


def purge_test_topics() -> None:
    """Redis streams and NATS JetStream streams of topics named TEST_TOPIC_PREFIX*, and the
    suites' RabbitMQ vhost; a service that is not there is skipped (this is housekeeping,
    never a test)."""
    if _reachable(6379):
        with contextlib.suppress(Exception):
            _purge_redis()
    if _reachable(4222):
        with contextlib.suppress(Exception):
            asyncio.run(_purge_nats())
    with contextlib.suppress(Exception):
        drop_rabbitmq_vhost()
