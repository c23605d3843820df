"""RedisStore against the real Redis: Dapr's hash layout, cross-process first-write, TTL."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
import trio

from filters.state.redis import RedisStore
from filters.state.service import expire_time
from filters.state.store import (
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    NotSupported,
    Query,
    SetRequest,
    StateError,
)
from tests.state.stores import component as state_component
from tests.state.stores import require_service, wait_until

HOST, PORT = "127.0.0.1", 6379
ROOT = Path(__file__).resolve().parents[2]

# Run by two processes at once: each tries first-write on the same keys and records what it won.
WRITER = """
import sys, pathlib, trio
from config.dapr.component import Component
from filters.state.redis import RedisStore
from filters.state.store import ETagMismatch, SetRequest

async def main(prefix, count, folder, name):
    folder = pathlib.Path(folder)
    meta = {"redisHost": "127.0.0.1:6379"}
    store = RedisStore.from_component(Component(name, "default", "state.redis", "v1", 5.0,
                                                False, meta, {}, ()))
    await store.init()
    (folder / f"{name}.ready").touch()
    while not (folder / "go").exists():
        await trio.sleep(0.001)
    won = []
    for i in range(count):
        try:
            await store.set(SetRequest(f"{prefix}{i}", name.encode(), concurrency="first-write"))
            won.append(str(i))
        except ETagMismatch:
            pass
    (folder / f"{name}.out").write_text(" ".join(won))
    await store.aclose()

trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
"""

component = partial(state_component, "state.redis", name="test-redis")


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    require_service("Redis", (HOST, PORT))
    client = redis.Redis(host=HOST, port=PORT)
    yield client
    client.close()


@pytest.fixture
def prefix(raw: redis.Redis) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    chosen = f"meshwire-test-{uuid.uuid4().hex}||"
    yield chosen
    for key in raw.scan_iter(match=f"{chosen}*"):
        raw.delete(key)


@pytest.fixture
async def store(raw: redis.Redis) -> AsyncIterator[RedisStore]:
    opened = RedisStore.from_component(component({"redisHost": f"{HOST}:{PORT}"}))
    await opened.init()
    yield opened
    await opened.aclose()


async def test_unreachable_host_is_a_state_error_naming_it() -> None:
    meta = {"redisHost": "127.0.0.1:1", "maxRetries": "0", "dialTimeout": "2s"}
    store = RedisStore.from_component(component(meta))
    with pytest.raises(StateError, match=r"127\.0\.0\.1:1"):
        await store.init()
    await store.aclose()


def test_metadata_is_read_like_dapr() -> None:
    meta = {
        **{"redisHost": "cache:6380", "redisDB": "2", "enableTLS": "true", "ttlInSeconds": "9"},
        **{"dialTimeout": "250ms", "readTimeout": "2", "poolSize": "3", "maxRetries": "1"},
    }
    settings = RedisStore.from_component(component(meta)).settings
    assert (settings.host, settings.port, settings.db, settings.tls) == ("cache", 6380, 2, True)
    assert (settings.dial_timeout, settings.read_timeout) == (0.25, 2.0)
    assert (settings.pool_size, settings.max_retries, settings.default_ttl) == (3, 1, 9)
    with pytest.raises(StateError, match="redisHost"):
        RedisStore.from_component(component({}))


async def test_values_are_dapr_hashes(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    key = f"{prefix}order"
    await store.set(SetRequest(key, b'{"id":1}', ttl=100))
    assert raw.hgetall(key) == {b"data": b'{"id":1}', b"version": b"1"}
    assert 0 < raw.ttl(key) <= 100
    item = await store.get(key)
    assert item is not None
    assert item.etag == "1"
    assert item.expires_at is not None
    await store.set(SetRequest(key, b'{"id":2}', etag="1"))
    assert raw.hgetall(key) == {b"data": b'{"id":2}', b"version": b"2"}
    assert raw.ttl(key) == -1  # a save without a TTL removes the stored one


async def test_etag_must_be_a_number(store: RedisStore, prefix: str) -> None:
    await store.set(SetRequest(f"{prefix}k", b"1"))
    with pytest.raises(ETagInvalid):
        await store.set(SetRequest(f"{prefix}k", b"2", etag="not-a-number"))
    with pytest.raises(ETagInvalid):
        await store.delete(DeleteRequest(f"{prefix}k", etag="W/1"))


async def test_two_processes_first_write_exactly_one_wins(
    store: RedisStore, prefix: str, tmp_path: Path
) -> None:
    count = 200
    writers = ["alpha", "beta"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in writers:
                command = [sys.executable, "-c", WRITER, prefix, str(count), str(tmp_path), name]
                nursery.start_soon(partial(trio.run_process, command, cwd=ROOT, check=True))
            await wait_until(lambda: all((tmp_path / f"{n}.ready").exists() for n in writers))
            (tmp_path / "go").touch()
    won = {name: set((tmp_path / f"{name}.out").read_text().split()) for name in writers}
    for i in range(count):
        winners = [name for name in writers if str(i) in won[name]]
        assert len(winners) == 1, f"key {i}: winners {winners}"
        item = await store.get(f"{prefix}{i}")
        assert item is not None
        assert item.value == winners[0].encode()


async def test_failing_transaction_leaves_no_trace(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    await store.set(SetRequest(f"{prefix}kept", b"old"))
    await store.set(SetRequest(f"{prefix}doomed", b"here"))
    before = {key: raw.hgetall(f"{prefix}{key}") for key in ("kept", "doomed")}
    with pytest.raises(ETagMismatch):
        await store.transact(
            [
                SetRequest(f"{prefix}new", b"1"),
                DeleteRequest(f"{prefix}doomed"),
                SetRequest(f"{prefix}kept", b"new", ttl=50),
                SetRequest(f"{prefix}kept", b"newer", etag="999"),
            ]
        )
    assert raw.exists(f"{prefix}new") == 0
    assert {key: raw.hgetall(f"{prefix}{key}") for key in ("kept", "doomed")} == before
    assert raw.ttl(f"{prefix}kept") == -1


async def test_ttl_expires(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    key = f"{prefix}short"
    await store.set(SetRequest(key, b"soon gone", ttl=1))
    with trio.fail_after(15):
        while True:
            if await store.get(key) is None:
                break
            await trio.sleep(0.05)
    assert raw.exists(key) == 0


async def test_default_ttl_from_metadata(raw: redis.Redis, prefix: str) -> None:
    meta = {"redisHost": f"{HOST}:{PORT}", "ttlInSeconds": "60"}
    store = RedisStore.from_component(component(meta))
    await store.init()
    await store.set(SetRequest(f"{prefix}a", b"1"))
    await store.set(SetRequest(f"{prefix}b", b"1", ttl=-1))  # -1: never expires
    await store.aclose()
    assert 0 < raw.ttl(f"{prefix}a") <= 60
    assert raw.ttl(f"{prefix}b") == -1


async def test_bytes_round_trip(store: RedisStore, prefix: str) -> None:
    values = {"binary": bytes(range(256)), "big": os.urandom(1 << 20), "ключ✓": b'"text"'}
    for name, value in values.items():
        await store.set(SetRequest(f"{prefix}{name}", value, content_type="application/x"))
    items = await store.bulk_get([f"{prefix}{name}" for name in values] + [f"{prefix}none"])
    assert [item.value if item else None for item in items] == [*values.values(), None]
    assert all(item.content_type == "application/x" for item in items if item)


async def test_query_is_not_supported(store: RedisStore) -> None:
    with pytest.raises(NotSupported):
        await store.query(Query())


async def test_an_expiry_past_year_9999_still_reads(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    """Redis takes an EXPIRE far past year 9999 (another writer may set one): GET must answer."""
    key = f"{prefix}far"
    await store.set(SetRequest(key, b"1", ttl=60))
    raw.expire(key, 9_000_000_000_000)
    item = await store.get(key)
    assert item is not None
    assert item.value == b"1"
    assert expire_time(item) == "9999-12-31T23:59:59Z"
