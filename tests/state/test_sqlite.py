"""The SQLite store beyond the conformance suite: metadata, the file, cleanup, two processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from filters.state.query import QueryError
from filters.state.sqlite import SqliteStore
from filters.state.store import Query, SetRequest, StateError
from tests.state.stores import component

REPO = Path(__file__).resolve().parents[2]


def from_meta(data_dir: Path, **metadata: str) -> SqliteStore:
    return SqliteStore.from_component(component("state.sqlite", metadata), data_dir=data_dir)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_follow_dapr(tmp_path: Path) -> None:
    store = from_meta(tmp_path / "data")
    assert store.database == str(tmp_path / "data" / "state.db")
    assert (store.table, store.timeout, store.busy_timeout) == ("state", 20.0, 2.0)
    assert store.cleanup_interval == 3600.0


def test_metadata_is_mapped(tmp_path: Path) -> None:
    store = from_meta(
        tmp_path,
        connectionString="file:my.db?mode=rwc",
        tableName="things",
        timeout="30",
        busyTimeout="500ms",
        cleanupInterval="10m",
    )
    assert (store.database, store.table) == ("file:my.db?mode=rwc", "things")
    assert (store.timeout, store.busy_timeout, store.cleanup_interval) == (30.0, 0.5, 600.0)
    assert from_meta(tmp_path, timeoutInSeconds="5").timeout == 5.0
    assert from_meta(tmp_path, cleanupInterval="0").cleanup_interval is None
    assert from_meta(tmp_path, cleanupInterval="-1").cleanup_interval is None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"busyTimeout": "soon"}, "busyTimeout"),
        ({"timeout": "5 parsecs"}, "timeout"),
        ({"tableName": "state; DROP TABLE x"}, "plain SQL identifier"),
    ],
)
def test_bad_metadata_is_a_state_error(
    tmp_path: Path, metadata: dict[str, str], message: str
) -> None:
    with pytest.raises(StateError, match=message):
        from_meta(tmp_path, **metadata)


async def test_default_file_is_created_in_wal_mode_and_persists(tmp_path: Path) -> None:
    store = from_meta(tmp_path / "nested" / "data")
    await store.init()
    await store.set(SetRequest("k", b'"v"'))
    await store.aclose()
    path = tmp_path / "nested" / "data" / "state.db"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    again = from_meta(tmp_path / "nested" / "data")
    await again.init()
    item = await again.get("k")
    await again.aclose()
    assert item is not None
    assert item.value == b'"v"'


async def test_file_uri_connection_string(tmp_path: Path) -> None:
    store = from_meta(tmp_path, connectionString=f"file:{tmp_path / 'uri.db'}?mode=rwc")
    await store.init()
    await store.set(SetRequest("k", b"1"))
    await store.aclose()
    assert (tmp_path / "uri.db").exists()


async def test_use_before_init_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not initialised"):
        await SqliteStore(tmp_path / "x.db").get("k")


async def test_expired_rows_read_as_missing_and_cleanup_deletes_them(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore(tmp_path / "ttl.db", table="ttl", clock=clock)
    await store.init()
    try:
        await store.set(SetRequest("short", b"1", ttl=10))
        await store.set(SetRequest("long", b"1", ttl=100))
        await store.set(SetRequest("forever", b"1"))
        short = await store.get("short")
        assert short is not None
        assert short.expires_at == clock.now + 10
        clock.now += 11
        assert await store.get("short") is None
        assert [item and item.key for item in await store.bulk_get(["short", "long"])] == [
            None,
            "long",
        ]
        with pytest.raises(StateError):
            await store.set(SetRequest("short", b"2", etag=short.etag))
        assert await store.cleanup() == 1
        assert await store.cleanup() == 0
    finally:
        await store.aclose()
    with sqlite3.connect(tmp_path / "ttl.db") as conn:
        keys = sorted(row[0] for row in conn.execute("SELECT key FROM ttl"))
    conn.close()
    assert keys == ["forever", "long"]


async def test_query_rejects_a_field_sqlite_cannot_address(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.db")
    await store.init()
    try:
        with pytest.raises(QueryError, match="double quote"):
            await store.query(Query(filter={"EQ": {'a"b': 1}}))
    finally:
        await store.aclose()


CONTENDER = """
import sys
import trio
from filters.state.sqlite import SqliteStore
from filters.state.store import ETagMismatch, SetRequest

async def main(database, key, etag):
    # One store (one connection) per writer: they contend in SQLite, not in our limiter.
    stores = [SqliteStore(database, busy_timeout=30.0) for _ in range(10)]
    for store in stores:
        await store.init()
    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)
    wins = 0

    async def write(store):
        nonlocal wins
        try:
            await store.set(SetRequest(key, b'"mine"', etag=etag or None,
                                       concurrency="first-write"))
        except ETagMismatch:
            return
        wins += 1

    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(write, store)
    for store in stores:
        await store.aclose()
    print(wins, flush=True)

trio.run(main, *sys.argv[1:])
"""


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


@pytest.mark.parametrize("etag", [True, False], ids=["same-etag", "first-write"])
async def test_two_processes_race_and_exactly_one_wins(tmp_path: Path, etag: bool) -> None:
    database = tmp_path / "shared.db"
    store = SqliteStore(database)
    await store.init()
    given = ""
    if etag:
        await store.set(SetRequest("k", b'"start"'))
        item = await store.get("k")
        assert item is not None
        given = item.etag
    argv = [sys.executable, "-c", CONTENDER, str(database), "k", given]
    with trio.fail_after(60):
        processes = [
            await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            for _ in range(2)
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                assert await read_line(process.stdout) == "ready"
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send_all(b"go\n")
            wins = []
            for process in processes:
                assert process.stdout is not None
                wins.append(int(await read_line(process.stdout)))
                assert await process.wait() == 0
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert sum(wins) == 1
    item = await store.get("k")
    await store.aclose()
    assert item is not None
    assert item.value == b'"mine"'
