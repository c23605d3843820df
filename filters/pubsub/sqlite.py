"""`pubsub.sqlite`, the embedded default broker: durable topics and consumer groups in one file."""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import trio

from config.dapr.component import Component
from filters.dapr.params import metadata_value
from filters.pubsub.broker import (
    Feature,
    Handler,
    Message,
    PublishRequest,
    PubSubError,
    SubscribeRequest,
)
from filters.sqlite_db import connect
from filters.state.metadata import ComponentMetadata

__all__ = ["SqliteBroker"]

T = TypeVar("T")

log = logging.getLogger("meshwire.pubsub")

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FIRST_RETRY_DELAY = 0.1  # seconds before a message whose handler raised is offered again
MAX_RETRY_DELAY = 5.0  # the retry delay doubles per attempt up to this


_SYNCHRONOUS = ("normal", "full")


@dataclass(frozen=True, slots=True)
class _Claim:
    """A message this broker holds for one group until it is acknowledged or released."""

    group_id: int
    message_id: int
    attempt: int  # with the claimer, identifies this claim among later ones of the same row
    message: Message


class _Op(Generic[T]):
    """One caller's work in a group-committed transaction, and its outcome."""

    __slots__ = ("done", "error", "value", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], T]) -> None:
        self.work = work
        self.done = False
        self.value: T | None = None
        self.error: Exception | None = None


class _Writer:
    """The one connection a broker writes through. Work queued by concurrent callers is
    committed in one `BEGIN IMMEDIATE` transaction (group commit), each in a savepoint."""

    def __init__(self, conn: sqlite3.Connection, describe: str) -> None:
        self._conn = conn
        self._describe = describe
        self._lock = trio.Lock()
        self._pending: list[_Op[Any]] = []
        self._closed = False

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise PubSubError(f"sqlite {self._describe}: the broker is closed")
        op = _Op(work)
        self._pending.append(op)
        # Shielded: once queued, any caller's flush may commit this op, so its own caller waits
        # for the outcome instead of abandoning claimed rows or a message it may have published.
        with trio.CancelScope(shield=True):
            async with self._lock:
                if not op.done:
                    batch, self._pending = self._pending, []
                    await trio.to_thread.run_sync(self._commit, batch)
        if op.error is not None:
            raise op.error
        return cast(T, op.value)

    async def close(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True):
            async with self._lock:
                await trio.to_thread.run_sync(self._conn.close)

    def _commit(self, batch: Sequence[_Op[Any]]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # a failure rolls back the whole transaction: no savepoint
                batch[0].value = batch[0].work(conn)
            else:
                for op in batch:
                    self._apply(op)
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback()
            for op in batch:
                op.value, op.error = None, self._error(exc)
        finally:
            for op in batch:
                op.done = True

    def _apply(self, op: _Op[Any]) -> None:
        self._conn.execute("SAVEPOINT op")
        try:
            op.value = op.work(self._conn)
        except Exception as exc:
            op.error = self._error(exc)
            self._conn.execute("ROLLBACK TO op")
        self._conn.execute("RELEASE op")

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable (closed, I/O error): the next BEGIN says so

    def _error(self, exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.Error):
            return PubSubError(f"sqlite {self._describe}: {exc}")
        return exc


class SqliteBroker:
    """Topics in one SQLite file that several processes may share.

    A message is fanned out at publish time into one delivery row per consumer group of its
    topic; a group exists from its first subscription on and keeps collecting messages while
    none of its members runs. Members claim due delivery rows atomically (a lease of
    `processing_timeout`); acknowledging deletes the row, and the message with its last one."""

    features: frozenset[Feature] = frozenset({Feature.MESSAGE_TTL})

    def __init__(
        self,
        database: str | Path,
        *,
        table_prefix: str = "pubsub_",
        processing_timeout: float = 60.0,
        poll_interval: float = 0.1,
        retention: float | None = None,
        cleanup_interval: float = 60.0,
        busy_timeout: float = 5.0,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _PREFIX.fullmatch(table_prefix):
            raise PubSubError(f"sqlite: table prefix {table_prefix!r} must be an SQL identifier")
        if min(processing_timeout, poll_interval, cleanup_interval) <= 0:
            raise PubSubError("sqlite: timeouts and intervals must be positive")
        if synchronous.lower() not in _SYNCHRONOUS:
            raise PubSubError(f"sqlite: synchronous must be normal or full, not {synchronous!r}")
        self.synchronous = synchronous.lower()
        self.database = str(database)
        self.table_prefix = table_prefix
        self.processing_timeout = processing_timeout
        self.poll_interval = poll_interval
        self.retention = retention  # seconds an unacknowledged message is kept; None: forever
        self.cleanup_interval = cleanup_interval
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._messages = f'"{table_prefix}messages"'
        self._groups = f'"{table_prefix}groups"'
        self._deliveries = f'"{table_prefix}deliveries"'
        self._consumer = uuid.uuid4().hex  # claims of this broker object
        self._writer: _Writer | None = None
        self._wakeups: dict[str, trio.Event] = {}
        self._next_cleanup = -math.inf  # trio time of the next cleanup (first: at once)

    @classmethod
    def from_component(
        cls, component: Component, *, data_dir: Path, clock: Callable[[], float] = time.time
    ) -> SqliteBroker:
        """The broker a `pubsub.sqlite` Component describes."""
        meta = ComponentMetadata(component, error=PubSubError, kind="pubsub")
        prefix = meta.text("tablePrefix", "pubsub_")
        if not _PREFIX.fullmatch(prefix):
            raise meta.error("tablePrefix", f"{prefix!r} is not a plain SQL identifier")
        retention = meta.optional_duration("retentionPeriod")
        return cls(
            meta.text("connectionString", "") or data_dir / "pubsub.db",
            table_prefix=prefix,
            processing_timeout=_positive(meta, "processingTimeout", 60.0),
            poll_interval=_positive(meta, "pollInterval", 0.1),
            retention=retention or None,
            cleanup_interval=_positive(meta, "cleanupInterval", 60.0),
            busy_timeout=meta.duration("busyTimeout", 5.0),
            synchronous=meta.text("synchronous", "normal"),
            clock=clock,
        )

    async def init(self) -> None:
        if self._writer is None:
            try:
                conn = await trio.to_thread.run_sync(self._open)
            except sqlite3.Error as exc:
                raise PubSubError(f"sqlite {self.database}: {exc}") from exc
            self._writer = _Writer(conn, self.database)

    async def aclose(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()

    async def publish(self, request: PublishRequest) -> None:
        expires = _ttl(request.metadata)
        row = (
            request.topic,
            bytes(request.data),
            request.content_type,
            json.dumps(dict(request.metadata)),
        )
        if await self._write(lambda conn: self._insert(conn, row, expires)):
            wakeup = self._wakeups.pop(request.topic, None)
            if wakeup is not None:
                wakeup.set()

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        group_id = await self._write(lambda conn: self._join(conn, request.topic, request.group))
        task_status.started()
        limit = max(1, request.concurrency)
        slots = trio.Semaphore(limit)
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()  # wait for a free slot, then claim as many as are free
                slots.release()
                # Taken before the claim: a local publish after the claim's read sets it.
                wakeup = self._wakeups.setdefault(request.topic, trio.Event())
                await self._maybe_cleanup()
                wanted = slots.value
                claims = await self._take(group_id, wanted)
                for claim in claims:  # no checkpoint until every claim has its task
                    slots.acquire_nowait()
                    nursery.start_soon(self._deliver, claim, handler, slots)
                if len(claims) < wanted:
                    with trio.move_on_after(self.poll_interval):
                        await wakeup.wait()

    async def cleanup(self) -> int:
        """Delete expired messages, those past the retention period and those every group
        acknowledged; the number of messages deleted."""
        return await self._write(self._purge)

    async def _take(self, group_id: int, limit: int) -> list[_Claim]:
        try:
            return await self._write(partial(self._claim, group_id=group_id, limit=limit))
        except PubSubError as exc:  # e.g. another process held the lock past busyTimeout
            log.warning("pubsub.sqlite: claiming failed, will retry: %s", exc)
            return []

    async def _deliver(self, claim: _Claim, handler: Handler, slots: trio.Semaphore) -> None:
        try:
            await handler(claim.message)
        except Exception:
            delay = _retry_delay(claim.attempt)
            await self._settle(lambda conn: self._release(conn, claim, delay))
        except BaseException:
            # Cancelled mid-delivery: hand the message back now rather than at lease expiry.
            await self._settle(lambda conn: self._release(conn, claim, 0.0))
            raise
        else:
            await self._settle(lambda conn: self._ack(conn, claim))
        finally:
            slots.release()

    async def _settle(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Acknowledge or release; on failure the lease expires and the message comes back."""
        try:
            await self._write(work)
        except PubSubError as exc:
            log.warning("pubsub.sqlite: %s; the message is redelivered after its lease", exc)

    async def _maybe_cleanup(self) -> None:
        if trio.current_time() >= self._next_cleanup:
            self._next_cleanup = trio.current_time() + self.cleanup_interval
            try:
                await self.cleanup()
            except PubSubError as exc:
                log.warning("pubsub.sqlite: cleanup failed: %s", exc)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise PubSubError("sqlite: the broker is not initialised (call init first)")
        return await self._writer.run(work)

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.database, self.busy_timeout)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL with NORMAL: a committed publish survives any crash of the process (SIGKILL
            # included); FULL also survives the machine losing power, at an fsync per commit.
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute("BEGIN IMMEDIATE")
            for statement in self._schema():
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _schema(self) -> list[str]:
        p = self.table_prefix
        return [
            f"CREATE TABLE IF NOT EXISTS {self._messages} ("
            "id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, data BLOB NOT NULL, "
            "content_type TEXT, metadata TEXT NOT NULL, published_at REAL NOT NULL, "
            "expires_at REAL)",
            f'CREATE INDEX IF NOT EXISTS "{p}messages_expires_at" ON {self._messages} '
            "(expires_at) WHERE expires_at IS NOT NULL",
            f"CREATE TABLE IF NOT EXISTS {self._groups} ("
            "id INTEGER PRIMARY KEY, topic TEXT NOT NULL, grp TEXT NOT NULL, "
            "created_at REAL NOT NULL, UNIQUE (topic, grp))",
            # due: when the row may be claimed (published, lease over, or retry delay passed).
            f"CREATE TABLE IF NOT EXISTS {self._deliveries} ("
            "group_id INTEGER NOT NULL, message_id INTEGER NOT NULL, due REAL NOT NULL, "
            "claimed_by TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
            "PRIMARY KEY (group_id, message_id)) WITHOUT ROWID",
            f'CREATE INDEX IF NOT EXISTS "{p}deliveries_message_id" '
            f"ON {self._deliveries} (message_id)",
        ]

    def _join(self, conn: sqlite3.Connection, topic: str, group: str) -> int:
        conn.execute(
            f"INSERT OR IGNORE INTO {self._groups} (topic, grp, created_at) VALUES (?, ?, ?)",
            (topic, group, self._clock()),
        )
        row = conn.execute(
            f"SELECT id FROM {self._groups} WHERE topic = ? AND grp = ?", (topic, group)
        ).fetchone()
        return int(row[0])

    def _insert(
        self, conn: sqlite3.Connection, row: tuple[str, bytes, str | None, str], ttl: float | None
    ) -> bool:
        """Store the message with a delivery row per group; False when the topic has none."""
        groups = conn.execute(f"SELECT id FROM {self._groups} WHERE topic = ?", (row[0],))
        group_ids = [int(group_id) for (group_id,) in groups]
        if not group_ids:
            return False  # like Dapr's brokers: a topic nobody subscribed to drops the message
        now = self._clock()
        cursor = conn.execute(
            f"INSERT INTO {self._messages} (topic, data, content_type, metadata, published_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (*row, now, None if ttl is None else now + ttl),
        )
        conn.executemany(
            f"INSERT INTO {self._deliveries} (group_id, message_id, due) VALUES (?, ?, ?)",
            [(group_id, cursor.lastrowid, now) for group_id in group_ids],
        )
        return True

    def _claim(self, conn: sqlite3.Connection, group_id: int, limit: int) -> list[_Claim]:
        """Lease up to `limit` of the group's due messages, oldest first, skipping (and
        deleting) expired ones."""
        now = self._clock()
        live: list[tuple[int, int]] = []
        while len(live) < limit:
            wanted = limit - len(live)
            rows = conn.execute(
                f"SELECT d.message_id, d.attempts, m.expires_at FROM {self._deliveries} d "
                f"JOIN {self._messages} m ON m.id = d.message_id "
                "WHERE d.group_id = ? AND d.due <= ? ORDER BY d.message_id LIMIT ?",
                (group_id, now, wanted),
            ).fetchall()
            expired = [(group_id, mid) for mid, _, expires in rows if _past(expires, now)]
            self._delete(conn, expired)
            fresh = [(mid, n + 1) for mid, n, expires in rows if not _past(expires, now)]
            self._lease(conn, group_id, fresh, now + self.processing_timeout)
            live.extend(fresh)
            if len(rows) < wanted or not expired:
                break  # no more due rows, or every one found was claimed
        return self._load(conn, group_id, live)

    def _lease(
        self, conn: sqlite3.Connection, group_id: int, rows: list[tuple[int, int]], until: float
    ) -> None:
        conn.executemany(
            f"UPDATE {self._deliveries} SET due = ?, claimed_by = ?, attempts = ? "
            "WHERE group_id = ? AND message_id = ?",
            [(until, self._consumer, attempt, group_id, mid) for mid, attempt in rows],
        )

    def _load(
        self, conn: sqlite3.Connection, group_id: int, claimed: list[tuple[int, int]]
    ) -> list[_Claim]:
        if not claimed:
            return []
        marks = ", ".join("?" * len(claimed))
        rows = conn.execute(
            f"SELECT id, topic, data, content_type, metadata FROM {self._messages} "
            f"WHERE id IN ({marks})",
            [mid for mid, _ in claimed],
        )
        messages = {
            int(mid): Message(topic, bytes(data), content_type, json.loads(metadata))
            for mid, topic, data, content_type, metadata in rows
        }
        return [_Claim(group_id, mid, n, messages[mid]) for mid, n in claimed]

    def _ack(self, conn: sqlite3.Connection, claim: _Claim) -> None:
        self._delete(conn, [(claim.group_id, claim.message_id)])

    def _release(self, conn: sqlite3.Connection, claim: _Claim, delay: float) -> None:
        # Only our own claim: after a lease expiry another member may hold the row by now.
        conn.execute(
            f"UPDATE {self._deliveries} SET due = ?, claimed_by = NULL "
            "WHERE group_id = ? AND message_id = ? AND claimed_by = ? AND attempts = ?",
            (
                self._clock() + delay,
                claim.group_id,
                claim.message_id,
                self._consumer,
                claim.attempt,
            ),
        )

    def _delete(self, conn: sqlite3.Connection, deliveries: Sequence[tuple[int, int]]) -> None:
        """Delete delivery rows, and each message whose last delivery row that was."""
        conn.executemany(
            f"DELETE FROM {self._deliveries} WHERE group_id = ? AND message_id = ?", deliveries
        )
        conn.executemany(
            f"DELETE FROM {self._messages} WHERE id = ?1 AND NOT EXISTS "
            f"(SELECT 1 FROM {self._deliveries} WHERE message_id = ?1)",
            [(mid,) for _, mid in deliveries],
        )

    def _purge(self, conn: sqlite3.Connection) -> int:
        now = self._clock()
        old = f"SELECT id FROM {self._messages} WHERE expires_at <= ?"
        params: tuple[float, ...] = (now,)
        if self.retention is not None:
            old += " OR published_at < ?"
            params = (now, now - self.retention)
        conn.execute(f"DELETE FROM {self._deliveries} WHERE message_id IN ({old})", params)
        cursor = conn.execute(
            f"DELETE FROM {self._messages} WHERE NOT EXISTS "
            f"(SELECT 1 FROM {self._deliveries} d WHERE d.message_id = {self._messages}.id)"
        )
        return cursor.rowcount


def _positive(meta: ComponentMetadata, key: str, default: float) -> float:
    seconds = meta.duration(key, default)
    if seconds <= 0:
        raise meta.error(key, f"must be positive, got {seconds}")
    return seconds


def _ttl(metadata: Mapping[str, str]) -> float | None:
    """Seconds from the request's `ttlInSeconds` (Dapr: a positive integer), or None."""
    value = metadata_value(metadata, "ttlInSeconds").strip()
    if not value:
        return None
    try:
        seconds = int(value)
    except ValueError:
        raise PubSubError(f"ttlInSeconds must be an integer, got {value!r}") from None
    if seconds <= 0:
        raise PubSubError(f"ttlInSeconds must be greater than zero, got {seconds}")
    return float(seconds)


def _retry_delay(attempt: int) -> float:
    """Seconds before a message whose handler raised on `attempt` (1-based) is offered again."""
    return min(FIRST_RETRY_DELAY * 2.0 ** min(attempt - 1, 16), MAX_RETRY_DELAY)


def _past(expires: float | None, now: float) -> bool:
    return expires is not None and expires <= now
