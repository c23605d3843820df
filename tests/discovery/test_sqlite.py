"""The sqlite resolver: sidecars sharing one database file, heartbeats, expiry, leaving."""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from proxy.discovery.base import Instance, ResolutionError, build_resolver
from proxy.discovery.sqlite import SqliteResolver
from tests.discovery.helpers import FakeClock, eventually

REPO = Path(__file__).resolve().parents[2]
ORDERS = Instance("orders", "default", "127.0.0.1", 50001)
BILLING = Instance("billing", "default", "127.0.0.1", 50002)

MakeResolver = Callable[..., SqliteResolver]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeResolver]:
    """Resolvers (sidecars) on one file in tmp_path, all closed at the end of the test."""
    made: list[SqliteResolver] = []

    def make_resolver(**configuration: object) -> SqliteResolver:
        resolver = SqliteResolver.from_config(configuration, data_dir=tmp_path, clock=clock)
        made.append(resolver)
        return resolver

    yield make_resolver
    for resolver in made:
        await resolver.aclose()


def rows(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT app_id, port FROM hosts ORDER BY port").fetchall()
    connection.close()
    return [(str(app_id), int(port)) for app_id, port in found]


async def test_two_sidecars_find_each_other(make: MakeResolver, tmp_path: Path) -> None:
    orders, billing = make(), make()
    await orders.register(ORDERS)
    await billing.register(BILLING)
    assert await orders.resolve("billing", "default") == [BILLING]
    assert await billing.resolve("orders", "default") == [ORDERS]
    assert await orders.resolve("orders", "default") == [ORDERS]
    assert await orders.resolve("billing", "prod") == []
    assert await orders.resolve("nobody", "default") == []
    database = tmp_path / "nameresolution.db"
    assert rows(database) == [("orders", 50001), ("billing", 50002)]
    with sqlite3.connect(database) as connection:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    connection.close()
    assert mode == "wal"


async def test_answers_are_cached_for_about_a_second(make: MakeResolver, clock: FakeClock) -> None:
    orders, billing = make(), make()
    assert await orders.resolve("billing", "default") == []
    await billing.register(BILLING)
    assert await orders.resolve("billing", "default") == []  # still the cached answer
    clock.advance(1.0)
    assert await orders.resolve("billing", "default") == [BILLING]
    await billing.aclose()
    orders.invalidate("billing", "default")
    assert await orders.resolve("billing", "default") == []


async def test_heartbeat_keeps_an_instance_alive_and_a_silent_one_expires(
    make: MakeResolver, clock: FakeClock, tmp_path: Path
) -> None:
    orders, billing, caller = make(), make(), make()
    await orders.register(ORDERS)
    await billing.register(BILLING)
    expiry = orders.settings.expiry  # updateInterval 5 s + timeout 1 s
    assert expiry == 6.0
    clock.advance(5.0)
    await orders.heartbeat()  # billing stays silent
    clock.advance(expiry - 5.0)
    assert await caller.resolve("orders", "default") == [ORDERS]
    assert await caller.resolve("billing", "default") == []
    assert rows(tmp_path / "nameresolution.db") == [("orders", 50001), ("billing", 50002)]
    assert await caller.remove_expired() == 1
    assert rows(tmp_path / "nameresolution.db") == [("orders", 50001)]
    # A heartbeat brings an expired-and-deleted registration back.
    await billing.heartbeat()
    clock.advance(1.0)
    assert await caller.resolve("billing", "default") == [BILLING]


async def test_run_heartbeats_and_cleans_up(
    make: MakeResolver, clock: FakeClock, tmp_path: Path
) -> None:
    orders = make(updateInterval="10ms", cleanupInterval="10ms")
    stale, caller = make(), make()
    await stale.register(BILLING)
    await orders.register(ORDERS)
    async with trio.open_nursery() as nursery:
        await nursery.start(orders.run)
        clock.advance(60.0)  # far beyond the expiry: only a heartbeat keeps orders alive

        async def orders_is_alive() -> bool:
            caller.invalidate("orders", "default")
            return await caller.resolve("orders", "default") == [ORDERS]

        async def only_orders_is_left() -> bool:
            path = tmp_path / "nameresolution.db"
            return await trio.to_thread.run_sync(rows, path) == [("orders", 50001)]

        await eventually(orders_is_alive)
        await eventually(only_orders_is_left)  # orders' cleanup task deleted billing's row
        nursery.cancel_scope.cancel()


async def test_aclose_removes_our_row(make: MakeResolver, tmp_path: Path) -> None:
    orders, billing = make(), make()
    await orders.register(ORDERS)
    await billing.register(BILLING)
    await orders.aclose()
    await orders.aclose()  # idempotent
    assert rows(tmp_path / "nameresolution.db") == [("billing", 50002)]
    assert await billing.resolve("orders", "default") == []
    with pytest.raises(ResolutionError, match="closed"):
        await orders.resolve("billing", "default")


async def test_a_restarted_sidecar_replaces_its_old_row(make: MakeResolver, tmp_path: Path) -> None:
    before, after = make(), make()
    await before.register(ORDERS)
    await after.register(ORDERS)  # same host:port, new process: no duplicate
    assert rows(tmp_path / "nameresolution.db") == [("orders", 50001)]
    assert await after.resolve("orders", "default") == [ORDERS]


async def test_two_processes_register_into_one_file(tmp_path: Path) -> None:
    database = str(tmp_path / "shared" / "nr.db")
    finished: dict[str, str] = {}

    async def sidecar(app_id: str, port: int, peer: str) -> None:
        command = [sys.executable, "-m", "tests.discovery.sqlite_worker", database]
        done = await trio.run_process(
            [*command, app_id, str(port), peer],
            cwd=REPO,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        finished[app_id] = done.stdout.decode().strip()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sidecar, "orders", 50001, "billing")
            nursery.start_soon(sidecar, "billing", 50002, "orders")
    assert finished == {"orders": "orders saw billing", "billing": "billing saw orders"}
    observer = SqliteResolver.from_config({"connectionString": database}, data_dir=tmp_path)
    try:
        assert await observer.resolve("orders", "default") == [ORDERS]
        assert await observer.resolve("billing", "default") == [BILLING]
    finally:
        await observer.aclose()


async def test_backend_failure_is_a_resolution_error_and_run_survives_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    broken = SqliteResolver.from_config(
        {"connectionString": str(tmp_path), "updateInterval": "10ms", "cleanupInterval": "10ms"},
        data_dir=tmp_path,
    )
    with pytest.raises(ResolutionError, match="unable to open"):
        await broken.resolve("orders", "default")
    with pytest.raises(ResolutionError):
        await broken.register(ORDERS)
    with caplog.at_level(logging.WARNING, logger="meshwire.discovery"):
        async with trio.open_nursery() as nursery:
            await nursery.start(broken.run)

            async def three_warnings() -> bool:
                return len(caplog.records) >= 3

            await eventually(three_warnings)
            nursery.cancel_scope.cancel()
    assert all("unable to open" in record.getMessage() for record in caplog.records)
    await broken.aclose()


def test_default_file_lives_in_the_data_dir(tmp_path: Path) -> None:
    resolver = build_resolver("sqlite", {}, data_dir=tmp_path / "data")
    assert isinstance(resolver, SqliteResolver)
    assert resolver.settings.database == str(tmp_path / "data" / "nameresolution.db")
    assert (resolver.settings.update_interval, resolver.settings.timeout) == (5.0, 1.0)
    assert not (tmp_path / "data").exists()  # nothing is opened before first use


@pytest.mark.parametrize(
    ("configuration", "named"),
    [
        ({"updateInterval": "soon"}, "updateInterval"),
        ({"timeout": 0}, "timeout"),
        ({"tableName": "hosts; DROP TABLE x"}, "tableName"),
        ({"disableWAL": "maybe"}, "disableWAL"),
        ({"connectionString": ""}, "connectionString"),
        ({"updateInterval": "5s", "refreshRate": "1s"}, "refreshRate"),
    ],
)
def test_configuration_errors_name_the_key(
    tmp_path: Path, configuration: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=f"nameResolution sqlite: configuration key '{named}'"):
        build_resolver("sqlite", configuration, data_dir=tmp_path)


def test_dapr_configuration_keys_are_accepted(tmp_path: Path) -> None:
    resolver = build_resolver(
        "sqlite",
        {
            "connectionString": str(tmp_path / "nr.db"),
            "updateInterval": "2s",
            "timeout": 1,
            "busyTimeout": "500ms",
            "tableName": "dapr_hosts",
            "metadataTableName": "dapr_metadata",
            "cleanupInterval": "10m",
            "disableWAL": "false",
        },
        data_dir=tmp_path,
    )
    assert isinstance(resolver, SqliteResolver)
    settings = resolver.settings
    assert (settings.update_interval, settings.timeout, settings.busy_timeout) == (2.0, 1.0, 0.5)
    assert (settings.table, settings.cleanup_interval, settings.wal) == ("dapr_hosts", 600.0, True)
