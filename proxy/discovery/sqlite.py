"""The `sqlite` resolver: sidecars on one host register and heartbeat in a shared SQLite file."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from proxy.discovery.base import Instance, ResolutionError
from proxy.discovery.cache import AnswerCache
from proxy.discovery.settings import ConfigReader

__all__ = ["DEFAULT_FILE_NAME", "SqliteResolver", "SqliteSettings"]

log = logging.getLogger("meshwire.discovery")

DEFAULT_FILE_NAME = "nameresolution.db"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """Dapr's `nameresolution.sqlite` keys and defaults (components-contrib sqlite_metadata.go)."""

    database: str  # connectionString: a file path (relative to the working directory) or file: URI
    update_interval: float = 5.0  # updateInterval: how often a live sidecar refreshes its row
    timeout: float = 1.0  # timeout: deadline of one database operation
    busy_timeout: float = 0.8  # busyTimeout: how long to wait for another writer's lock
    cleanup_interval: float = 3600.0  # cleanupInterval: how often expired rows are deleted
    table: str = "hosts"  # tableName
    wal: bool = True  # not disableWAL

    @property
    def expiry(self) -> float:
        """A row is live while unseen for less than this.

        A live sidecar writes every `update_interval` and each write finishes within `timeout`,
        so its row is never older than their sum. Dapr keeps the same one-timeout margin (it
        heartbeats every updateInterval - timeout and trusts rows for updateInterval).
        """
        return self.update_interval + self.timeout


class SqliteResolver:
    """Register, heartbeat and resolve through one SQLite file that several processes share.

    The file is opened on first use, on a worker thread: every use of the connection runs in
    `trio.to_thread.run_sync` under this resolver's CapacityLimiter(1), so exactly one thread
    touches it at a time (hence `check_same_thread=False`). WAL lets readers proceed while
    another process writes; writers wait up to `busy_timeout` for each other.
    """

    def __init__(
        self,
        settings: SqliteSettings,
        *,
        clock: Callable[[], float] = time.time,
        cache_ttl: float = 1.0,
    ) -> None:
        self.settings = settings
        self.instance_id = uuid.uuid4().hex
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._cache = AnswerCache(clock)
        self._limiter = trio.CapacityLimiter(1)
        self._connection: sqlite3.Connection | None = None  # only touched under the limiter
        self._registered: Instance | None = None
        self._closed = False

    @classmethod
    def from_config(
        cls,
        configuration: Mapping[str, object],
        *,
        data_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> SqliteResolver:
        reader = ConfigReader("sqlite", configuration)
        table = _identifier(reader, "tableName", "hosts")
        # Dapr keeps its cleanup bookkeeping in metadataTableName; we need no such table but
        # accept (and check) the key so a Dapr Configuration works unchanged.
        _identifier(reader, "metadataTableName", "metadata")
        settings = SqliteSettings(
            database=reader.string("connectionString", str(data_dir / DEFAULT_FILE_NAME)),
            update_interval=reader.duration("updateInterval", 5.0, minimum=0.001),
            timeout=reader.duration("timeout", 1.0, minimum=0.001),
            busy_timeout=reader.duration("busyTimeout", 0.8),
            cleanup_interval=reader.duration("cleanupInterval", 3600.0, minimum=0.001),
            table=table,
            wal=not reader.boolean("disableWAL", False),
        )
        reader.finish()
        return cls(settings, clock=clock)

    # -- the Resolver protocol ---------------------------------------------------------------

    async def resolve(self, app_id: str, namespace: str) -> list[Instance]:
        cached = self._cache.get((app_id, namespace))
        if cached is not None:
            return cached
        instances = await self._run(self._select_live, app_id, namespace)
        self._cache.put((app_id, namespace), instances, self._cache_ttl)
        return list(instances)

    async def register(self, instance: Instance) -> None:
        """Upsert our row; a stale row of an earlier sidecar on the same host:port is replaced."""
        self._registered = instance
        await self.heartbeat()
        self.invalidate(instance.app_id, instance.namespace)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat every update_interval; remove expired rows now and every cleanup_interval."""
        settings = self.settings
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._every, settings.update_interval, self.heartbeat, False)
            nursery.start_soon(self._every, settings.cleanup_interval, self.remove_expired, True)
            task_status.started()

    async def aclose(self) -> None:
        """Delete our row (a graceful leave) and close the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True  # first: no heartbeat may write our row after it is deleted
        with trio.CancelScope(shield=True):
            if self._registered is not None:
                try:
                    await self._call(self._delete_own)
                except ResolutionError as exc:
                    log.warning("name resolution: could not remove our registration: %s", exc)
            with trio.move_on_after(self.settings.timeout):
                await trio.to_thread.run_sync(
                    self._close_connection, limiter=self._limiter, abandon_on_cancel=True
                )

    def invalidate(self, app_id: str, namespace: str) -> None:
        self._cache.forget((app_id, namespace))

    # -- what run() does, public so the integrator and tests can drive it --------------------

    async def heartbeat(self) -> None:
        """Refresh our row (re-creating it if another process expired it); no-op before register."""
        if self._registered is not None:
            await self._run(self._upsert_own, self._registered)

    async def remove_expired(self) -> int:
        """Delete every row unseen for `expiry` or longer; returns how many went."""
        return await self._run(self._delete_expired)

    # -- trio side -------------------------------------------------------------------------

    async def _every(
        self, period: float, action: Callable[[], Awaitable[object]], at_start: bool
    ) -> None:
        deadline = trio.current_time() + (0.0 if at_start else period)
        while True:
            await trio.sleep_until(deadline)
            if self._closed:
                return  # left the mesh: never write our row again
            try:
                await action()
            except ResolutionError as exc:
                log.warning("name resolution: %s", exc)
            # Fixed-rate schedule without a burst of catch-up runs after a stall.
            deadline = max(deadline + period, trio.current_time())

    async def _run(self, operation: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise ResolutionError("sqlite name resolution: resolver is closed")
        return await self._call(operation, *args)

    async def _call(self, operation: Callable[..., T], *args: object) -> T:
        """Run `operation(connection, *args)` on a worker thread within `timeout`."""
        try:
            with trio.fail_after(self.settings.timeout):
                return await trio.to_thread.run_sync(
                    self._in_thread,
                    operation,
                    args,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
        except trio.TooSlowError:
            raise ResolutionError(
                f"sqlite name resolution ({self.settings.database}): no answer within "
                f"{self.settings.timeout:g}s"
            ) from None
        except (sqlite3.Error, OSError) as exc:
            raise ResolutionError(
                f"sqlite name resolution ({self.settings.database}): {exc}"
            ) from exc

    # -- worker-thread side: runs one at a time under self._limiter --------------------------

    def _in_thread(self, operation: Callable[..., T], args: tuple[object, ...]) -> T:
        if self._connection is None:
            self._connection = self._open()
        return operation(self._connection, *args)

    def _open(self) -> sqlite3.Connection:
        settings = self.settings
        uri = settings.database.startswith("file:")
        if not uri and settings.database != ":memory:":
            Path(settings.database).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            settings.database,
            timeout=settings.busy_timeout,
            isolation_level=None,  # autocommit: every statement is its own transaction
            check_same_thread=False,
            uri=uri,
        )
        try:
            self._create_schema(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        # Two processes creating the file at once: switching to WAL (and, in a race, creating
        # the table) can fail with SQLITE_BUSY at once, without waiting in the busy handler,
        # because SQLite refuses to wait where waiting could deadlock. Retry here instead,
        # for as long as the busy timeout would have waited.
        settings = self.settings
        deadline = time.monotonic() + settings.busy_timeout
        while True:
            try:
                current = connection.execute("PRAGMA journal_mode").fetchone()[0]
                if settings.wal and str(current).lower() != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {settings.table} ("
                    " instance_id TEXT PRIMARY KEY,"
                    " app_id TEXT NOT NULL,"
                    " namespace TEXT NOT NULL,"
                    " host TEXT NOT NULL,"
                    " port INTEGER NOT NULL,"
                    " last_seen REAL NOT NULL,"
                    " UNIQUE (host, port))"
                )
                connection.execute(
                    f"CREATE INDEX IF NOT EXISTS {settings.table}_by_app"
                    f" ON {settings.table} (app_id, namespace, last_seen)"
                )
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)  # a worker thread: sleeping blocks nobody else

    def _select_live(
        self, connection: sqlite3.Connection, app_id: str, namespace: str
    ) -> tuple[Instance, ...]:
        oldest = self._clock() - self.settings.expiry
        rows = connection.execute(
            f"SELECT host, port FROM {self.settings.table}"
            " WHERE app_id = ? AND namespace = ? AND last_seen > ? ORDER BY host, port",
            (app_id, namespace, oldest),
        ).fetchall()
        return tuple(Instance(app_id, namespace, str(host), int(port)) for host, port in rows)

    def _upsert_own(self, connection: sqlite3.Connection, instance: Instance) -> None:
        # REPLACE also removes a row holding the same host:port under another instance_id: an
        # earlier sidecar that crashed on this address without leaving.
        connection.execute(
            f"INSERT OR REPLACE INTO {self.settings.table}"
            " (instance_id, app_id, namespace, host, port, last_seen) VALUES (?, ?, ?, ?, ?, ?)",
            (
                self.instance_id,
                instance.app_id,
                instance.namespace,
                instance.host,
                instance.port,
                self._clock(),
            ),
        )

    def _delete_own(self, connection: sqlite3.Connection) -> None:
        connection.execute(
            f"DELETE FROM {self.settings.table} WHERE instance_id = ?", (self.instance_id,)
        )

    def _delete_expired(self, connection: sqlite3.Connection) -> int:
        oldest = self._clock() - self.settings.expiry
        cursor = connection.execute(
            f"DELETE FROM {self.settings.table} WHERE last_seen <= ?", (oldest,)
        )
        return cursor.rowcount

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _identifier(reader: ConfigReader, key: str, default: str) -> str:
    name = reader.string(key, default)
    if not _IDENTIFIER.fullmatch(name):
        raise reader.error(key, f"not a valid SQL identifier: {name!r}")
    return name
