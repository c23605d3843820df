"""`state.sqlite`, the embedded default store: stdlib sqlite3 on worker threads, WAL, one file."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from config.dapr.component import Component
from config.dapr.duration import parse_go_duration
from filters.dapr.params import printable
from filters.sqlite_db import connect
from filters.state.query import (
    NOT_JSON,
    QueryError,
    decode_json,
    encode_token,
    field_path,
    validate_query,
)
from filters.state.store import (
    DeleteRequest,
    ETagMismatch,
    Feature,
    Query,
    QueryResult,
    SetRequest,
    StateError,
    StateItem,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COLUMNS = "key, value, etag, content_type, expiration_time"
_LIVE = "(expiration_time IS NULL OR expiration_time > ?)"
# Only JSON values are stored as TEXT and seen by the query API; CASE keeps SQLite's JSON
# functions from ever reading a binary value, whatever order the planner evaluates terms in.
_DOC = "(CASE WHEN is_json = 1 THEN value END)"
_BULK_CHUNK = 500
_INT64 = (-(2**63), 2**63 - 1)


class SqliteStore:
    """A state store in one SQLite table. Conditional writes and transactions run inside one
    `BEGIN IMMEDIATE` transaction, so processes sharing the file cannot both win a race."""

    features: frozenset[Feature] = frozenset(
        {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}
    )

    def __init__(
        self,
        database: str | Path,
        *,
        table: str = "state",
        timeout: float = 20.0,
        busy_timeout: float = 2.0,
        cleanup_interval: float | None = None,
        wal: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise StateError(f"sqlite: table name {table!r} must be a plain SQL identifier")
        self.database = str(database)
        self.table = table
        self.timeout = timeout
        self.busy_timeout = busy_timeout
        self.cleanup_interval = cleanup_interval  # seconds between cleanup() calls; None: never
        self._wal = wal
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self._deadline = 0.0

    @classmethod
    def from_component(
        cls, component: Component, *, data_dir: Path, clock: Callable[[], float] = time.time
    ) -> SqliteStore:
        """The store a `state.sqlite` Component describes (Dapr's metadata names)."""
        meta = component.metadata
        where = f"component {component.name!r}"
        database: str | Path = meta.get("connectionString", "").strip()
        if not database:
            data_dir.mkdir(parents=True, exist_ok=True)
            database = data_dir / "state.db"
        timeout = meta.get("timeout") or meta.get("timeoutInSeconds") or "20s"
        # Reads skip expired rows anyway; the cleanup only reclaims space (hourly unless set).
        cleanup = _duration(meta.get("cleanupInterval", "1h"), f"{where}: cleanupInterval")
        return cls(
            database,
            table=meta.get("tableName") or "state",
            timeout=_duration(timeout, f"{where}: timeout") or 20.0,
            busy_timeout=_duration(meta.get("busyTimeout", "2s"), f"{where}: busyTimeout"),
            cleanup_interval=cleanup if cleanup > 0 else None,
            wal=meta.get("disableWAL", "false").strip().lower() != "true",
            clock=clock,
        )

    async def init(self) -> None:
        if self._conn is None:
            self._conn = await self._thread(self._open)

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def get(self, key: str) -> StateItem | None:
        return (await self.bulk_get([key]))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        def read(conn: sqlite3.Connection) -> dict[str, StateItem]:
            found: dict[str, StateItem] = {}
            now = self._clock()
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _BULK_CHUNK):
                chunk = unique[start : start + _BULK_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f'SELECT {_COLUMNS} FROM "{self.table}" WHERE key IN ({marks}) AND {_LIVE}',
                    (*chunk, now),
                )
                found.update((row[0], _item(row)) for row in rows)
            return found

        found = await self._run(read)
        return [found.get(key) for key in keys]

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[SetRequest | DeleteRequest]) -> None:
        if operations:
            await self._run(lambda conn: self._apply(conn, operations))

    async def query(self, query: Query) -> QueryResult:
        offset, limit = validate_query(query), query.limit or None  # Dapr: 0 is no limit
        where: list[str] = ["is_json = 1", _LIVE]
        params: list[object] = [self._clock()]
        if query.filter is not None:
            clause, filter_params = _filter_sql(query.filter)
            where.append(clause)
            params.extend(filter_params)
        order = [f"json_extract({_DOC}, ?) {direction}" for _, direction in query.sort]
        params.extend(_json_path(field) for field, _ in query.sort)
        # One row beyond the page tells whether another page follows.
        params.extend([-1 if limit is None else limit + 1, offset])
        sql = (
            f'SELECT {_COLUMNS} FROM "{self.table}" WHERE {" AND ".join(where)} '
            f"ORDER BY {', '.join([*order, 'key ASC'])} LIMIT ? OFFSET ?"
        )
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        more = limit is not None and len(rows) > limit
        items = [_item(row) for row in rows[:limit]]
        return QueryResult(items, encode_token(offset + len(items)) if more else None)

    async def cleanup(self) -> int:
        """Delete the rows whose TTL has passed; the number deleted."""

        def purge(conn: sqlite3.Connection) -> int:
            sql = f'DELETE FROM "{self.table}" WHERE expiration_time <= ?'
            return conn.execute(sql, (self._clock(),)).rowcount

        return await self._run(purge)

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.database, self.busy_timeout)
        try:
            if self._wal:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.table}" ('
                "key TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, is_json INTEGER NOT NULL, "
                "content_type TEXT, etag TEXT NOT NULL, expiration_time REAL, "
                "update_time REAL NOT NULL)"
            )
            conn.execute(
                f'CREATE INDEX IF NOT EXISTS "{self.table}_expiration_time" '
                f'ON "{self.table}" (expiration_time) WHERE expiration_time IS NOT NULL'
            )
            conn.set_progress_handler(self._past_deadline, 1000)
        except BaseException:
            conn.close()
            raise
        return conn

    def _apply(
        self, conn: sqlite3.Connection, operations: Sequence[SetRequest | DeleteRequest]
    ) -> None:
        # IMMEDIATE takes the write lock before the etag checks: no other connection, in this
        # process or another, can write between a check and the write it guards.
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock()
            for op in operations:
                row = conn.execute(
                    f'SELECT etag FROM "{self.table}" WHERE key = ? AND {_LIVE}', (op.key, now)
                ).fetchone()
                _check(op, None if row is None else str(row[0]))
                if isinstance(op, DeleteRequest):
                    conn.execute(f'DELETE FROM "{self.table}" WHERE key = ?', (op.key,))
                    continue
                text = decode_json(op.value) is not NOT_JSON
                # JSON is stored as TEXT for SQLite's JSON functions, if SQLite agrees it is JSON.
                conn.execute(
                    f'INSERT OR REPLACE INTO "{self.table}" (key, value, is_json, content_type, '
                    "etag, expiration_time, update_time) VALUES (:key, :value, "
                    "CASE WHEN :text THEN json_valid(:value) ELSE 0 END, :content_type, :etag, "
                    ":expires, :now)",
                    {
                        "key": op.key,
                        "value": op.value.decode() if text else bytes(op.value),
                        "text": int(text),
                        "content_type": op.content_type,
                        "etag": str(uuid.uuid4()),
                        "expires": now + op.ttl if op.ttl is not None and op.ttl > 0 else None,
                        "now": now,
                    },
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` with the connection on a worker thread."""
        conn = self._conn
        if conn is None:
            raise StateError("sqlite: the store is not initialised (call init first)")
        return await self._thread(lambda: work(conn))

    async def _thread(self, work: Callable[[], T]) -> T:
        """Run `work` on a worker thread, one at a time; sqlite errors become StateError."""

        def call() -> T:
            self._deadline = time.monotonic() + self.timeout
            try:
                return work()
            except sqlite3.Error as exc:
                raise StateError(f"sqlite {self.database} ({self.table}): {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    def _past_deadline(self) -> int:
        # Non-zero makes SQLite interrupt the statement: Dapr's per-operation timeout.
        return int(time.monotonic() > self._deadline)


def _check(op: SetRequest | DeleteRequest, etag: str | None) -> None:
    """Dapr's etag and first-write rules against the live row's etag (None: no row)."""
    if op.etag is not None:
        if etag is None or etag != op.etag:
            raise ETagMismatch(f"etag mismatch for key {printable(op.key)}")
    elif isinstance(op, SetRequest) and op.concurrency == "first-write" and etag is not None:
        raise ETagMismatch(f"first-write: key {printable(op.key)} already exists")


def _item(row: tuple[str, str | bytes, str, str | None, float | None]) -> StateItem:
    key, value, etag, content_type, expires = row
    data = value.encode() if isinstance(value, str) else bytes(value)
    return StateItem(key, data, etag, content_type, expires)


def _filter_sql(filter_: Mapping[str, object]) -> tuple[str, list[object]]:
    """A validated query filter as a WHERE clause over the JSON value, with its parameters."""
    ((op, arg),) = filter_.items()
    if op in ("AND", "OR"):
        assert isinstance(arg, list)
        parts = [_filter_sql(child) for child in arg]
        clause = f" {op} ".join(sql for sql, _ in parts)
        return f"({clause})", [param for _, params in parts for param in params]
    assert isinstance(arg, Mapping)
    ((field, wanted),) = arg.items()
    path = _json_path(field)
    candidates = wanted if op == "IN" and isinstance(wanted, list) else [wanted]
    if not candidates:
        return "0", []
    clauses: list[str] = []
    params: list[object] = []
    kind = f"json_type({_DOC}, ?)"
    for value in candidates:
        # json_type keeps JSON's types apart where SQLite's values would not (true vs 1, "1" vs 1).
        if value is None:
            clauses.append(f"{kind} = 'null'")
            params.append(path)
        elif isinstance(value, bool):
            clauses.append(f"{kind} = ?")
            params.extend([path, "true" if value else "false"])
        elif isinstance(value, int | float):
            clauses.append(f"({kind} IN ('integer', 'real') AND json_extract({_DOC}, ?) = ?)")
            in_range = isinstance(value, float) or _INT64[0] <= value <= _INT64[1]
            params.extend([path, path, value if in_range else float(value)])
        else:
            clauses.append(f"({kind} = 'text' AND json_extract({_DOC}, ?) = ?)")
            params.extend([path, path, value])
    return f"({' OR '.join(clauses)})", params


def _json_path(field: str) -> str:
    """`person.org` as the SQLite JSON path `$."person"."org"`."""
    parts = field_path(field)
    if any('"' in part for part in parts):
        raise QueryError(f"field {field!r}: a double quote cannot be used in a field name here")
    return "$" + "".join(f'."{part}"' for part in parts)


def _duration(value: str, where: str) -> float:
    """A Go duration or a bare number of seconds (Dapr reads integers so); negative is 0."""
    text = value.strip()
    if text.startswith("-"):
        return 0.0
    try:
        return float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else parse_go_duration(text)
    except ValueError as exc:
        raise StateError(f"{where}: {exc}") from None
