"""PostgresStore against the real PostgreSQL: cross-process first-write, TTL, query paging."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest
import trio

from filters.state.postgres import PostgresStore
from filters.state.service import expire_time
from filters.state.store import (
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Query,
    SetRequest,
    StateError,
)
from tests.state.stores import component as state_component
from tests.state.stores import require_service, wait_until

HOST, PORT = "127.0.0.1", 5432
DSN = f"host={HOST} port={PORT} user=postgres dbname=test"
ROOT = Path(__file__).resolve().parents[2]

# Run by two processes at once: each tries first-write on the same keys and records what it won.
WRITER = """
import sys, pathlib, trio
from config.dapr.component import Component
from filters.state.postgres import PostgresStore
from filters.state.service import expire_time
from filters.state.store import ETagMismatch, SetRequest

async def main(dsn, table, count, folder, name):
    folder = pathlib.Path(folder)
    meta = {"connectionString": dsn, "tableName": table}
    store = PostgresStore.from_component(Component(name, "default", "state.postgresql", "v1",
                                                   5.0, False, meta, {}, ()))
    await store.init()
    (folder / f"{name}.ready").touch()
    while not (folder / "go").exists():
        await trio.sleep(0.001)
    won = []
    for i in range(count):
        try:
            await store.set(SetRequest(f"k{i}", name.encode(), concurrency="first-write"))
            won.append(str(i))
        except ETagMismatch:
            pass
    (folder / f"{name}.out").write_text(" ".join(won))
    await store.aclose()

trio.run(main, *sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:6])
"""

component = partial(state_component, "state.postgresql", name="test-postgres")


@pytest.fixture
def table() -> str:
    require_service("PostgreSQL", (HOST, PORT))
    return f"meshwire_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def raw() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(DSN, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def store(table: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore.from_component(component({"connectionString": DSN, "tableName": table}))
    await opened.init()
    yield opened
    await opened.drop_table()
    await opened.aclose()


async def test_unreachable_host_is_a_state_error_naming_it() -> None:
    meta = {"connectionString": "host=127.0.0.1 port=1 user=postgres dbname=test"}
    store = PostgresStore.from_component(component(meta))
    with pytest.raises(StateError, match=r"127\.0\.0\.1:1"):
        await store.init()
    await store.aclose()


def test_metadata_is_read_like_dapr() -> None:
    meta = {
        **{"connectionString": DSN, "tableName": "app.state", "timeout": "5"},
        **{"cleanupInterval": "10m", "maxConns": "3", "connectionMaxIdleTime": "1m"},
    }
    settings = PostgresStore.from_component(component(meta)).settings
    assert (settings.table, settings.metadata_table) == ("app.state", "dapr_metadata")
    assert (settings.timeout, settings.cleanup_interval) == (5.0, 600.0)
    assert (settings.max_conns, settings.max_idle) == (3, 60.0)
    with pytest.raises(StateError, match="tableName"):
        PostgresStore.from_component(component({"connectionString": DSN, "tableName": "x;y"}))
    with pytest.raises(StateError, match="connectionString"):
        PostgresStore.from_component(component({}))


async def test_two_processes_first_write_exactly_one_wins(
    store: PostgresStore, table: str, tmp_path: Path
) -> None:
    count = 200
    writers = ["alpha", "beta"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in writers:
                args = [DSN, table, str(count), str(tmp_path), name]
                command = [sys.executable, "-c", WRITER, *args]
                nursery.start_soon(partial(trio.run_process, command, cwd=ROOT, check=True))
            await wait_until(lambda: all((tmp_path / f"{n}.ready").exists() for n in writers))
            (tmp_path / "go").touch()
    won = {name: set((tmp_path / f"{name}.out").read_text().split()) for name in writers}
    for i in range(count):
        winners = [name for name in writers if str(i) in won[name]]
        assert len(winners) == 1, f"key {i}: winners {winners}"
        item = await store.get(f"k{i}")
        assert item is not None
        assert item.value == winners[0].encode()


async def test_failing_transaction_leaves_no_trace(store: PostgresStore) -> None:
    await store.set(SetRequest("kept", b"old"))
    await store.set(SetRequest("doomed", b"here"))
    before = await store.bulk_get(["kept", "doomed"])
    with pytest.raises(ETagMismatch):
        await store.transact(
            [
                SetRequest("new", b"1"),
                DeleteRequest("doomed"),
                SetRequest("kept", b"new", ttl=50),
                SetRequest("kept", b"newer", etag="999999"),
            ]
        )
    assert await store.bulk_get(["kept", "doomed", "new"]) == [*before, None]


async def test_etags_are_numbers_and_never_reused(store: PostgresStore) -> None:
    await store.set(SetRequest("k", b"1"))
    first = await store.get("k")
    assert first is not None
    with pytest.raises(ETagInvalid):
        await store.set(SetRequest("k", b"2", etag="not-a-number"))
    await store.delete(DeleteRequest("k", etag=first.etag))
    await store.set(SetRequest("k", b"1"))
    again = await store.get("k")
    assert again is not None
    assert again.etag != first.etag
    with pytest.raises(ETagMismatch):
        await store.delete(DeleteRequest("k", etag=first.etag))


async def test_ttl_expires_and_cleanup_deletes_the_row(
    store: PostgresStore, table: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    await store.set(SetRequest("short", b"soon gone", ttl=1))
    await store.set(SetRequest("long", b"stays"))
    with trio.fail_after(15):
        while True:
            if await store.get("short") is None:
                break
            await trio.sleep(0.05)
    assert await store.cleanup() == 1
    rows = raw.execute(f"SELECT key FROM {table} ORDER BY key").fetchall()
    assert rows == [("long",)]


async def test_bytes_round_trip_and_json_column(
    store: PostgresStore, table: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    values = {
        "binary": bytes(range(256)),
        "big": os.urandom(1 << 20),
        "json": b'{ "b": 1,  "a": [1.50, "x"] }',
        "nul": b'"a\\u0000b"',  # JSON that jsonb refuses: kept, but not queryable
        "ключ✓": b'"text"',
    }
    for name, value in values.items():
        await store.set(SetRequest(name, value, content_type="application/x"))
    items = await store.bulk_get([*values, "none"])
    assert [item.value if item else None for item in items] == [*values.values(), None]
    rows = dict(raw.execute(f"SELECT key, json IS NOT NULL FROM {table}").fetchall())
    assert rows == {"binary": False, "big": False, "json": True, "nul": False, "ключ✓": True}


async def test_query_filters_sorts_and_pages(store: PostgresStore) -> None:
    people = [
        {"name": "ann", "org": {"id": "dev"}, "age": 31},
        {"name": "bob", "org": {"id": "ops"}, "age": 25},
        {"name": "cid", "org": {"id": "dev"}, "age": 47},
        {"name": "dee", "org": {"id": "hr"}, "age": 25},
        {"name": "eve", "org": {"id": "dev"}, "age": 19},
        {"name": "fay", "org": {"id": "ops"}, "age": 52},
    ]
    for person in people:
        await store.set(SetRequest(f"p-{person['name']}", json.dumps(person).encode()))
    await store.set(SetRequest("not-json", b"\xff\x00"))
    filter_ = {
        "OR": [
            {"AND": [{"EQ": {"org.id": "dev"}}, {"IN": {"age": [31, 47, 19]}}]},
            {"EQ": {"org.id": "ops"}},
        ]
    }
    pages: list[list[str]] = []
    token: str | None = None
    with trio.fail_after(30):
        while True:
            query = Query(filter=filter_, sort=[("age", "DESC")], limit=2, token=token)
            result = await store.query(query)
            pages.append([item.key for item in result.items])
            token = result.token
            if token is None:
                break
    assert pages == [["p-fay", "p-cid"], ["p-ann", "p-bob"], ["p-eve"]]
    everything = await store.query(Query(sort=[("name", "ASC")]))
    assert [item.key for item in everything.items] == [f"p-{p['name']}" for p in people]
    assert everything.token is None


async def test_an_expiry_no_timestamp_can_show_still_reads(
    store: PostgresStore, raw: psycopg.Connection[tuple[object, ...]], table: str
) -> None:
    """timestamptz holds 'infinity' (another writer may set it): GET must still answer."""
    await store.set(SetRequest("k", b"1", ttl=60))
    raw.execute(f"UPDATE {table} SET expiredate = 'infinity'")
    item = await store.get("k")
    assert item is not None
    assert item.value == b"1"
    assert expire_time(item) == "9999-12-31T23:59:59Z"
