"""`state.postgresql` (v1): Dapr's PostgreSQL state store on psycopg 3's pool, bridged to trio."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from config.dapr.component import Component
from filters.dapr.params import printable
from filters.state.metadata import ComponentMetadata
from filters.state.postgres_query import sql_condition, sql_sort_terms
from filters.state.query import (
    NOT_JSON,
    decode_json,
    encode_token,
    field_path,
    validate_query,
)
from filters.state.store import (
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Feature,
    Query,
    QueryResult,
    SetRequest,
    StateError,
    StateItem,
)

__all__ = ["PostgresSettings", "PostgresStore"]

log = logging.getLogger("meshwire.state")

T = TypeVar("T")
Row = tuple[Any, ...]
Statement = sql.SQL | sql.Composed

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LIVE = "(expiredate IS NULL OR expiredate > now())"
_COLUMNS = "key, value, etag, content_type, extract(epoch FROM expiredate)"
_EXPIRY = "now() + %s::integer * interval '1 second'"  # NULL (never) when the ttl is NULL
_MAX_ETAG = 2**63 - 1
DEFAULT_MAX_CONNS = max(4, os.cpu_count() or 1)  # pgx's default pool size


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Dapr's `state.postgresql` v1 metadata, with its defaults."""

    conninfo: str  # connectionString: libpq key=value or a postgres:// URI
    table: str = "state"  # tableName, optionally schema-qualified
    metadata_table: str = "dapr_metadata"  # metadataTableName: our cleanup bookkeeping
    timeout: float = 20.0  # timeout: of one database operation
    cleanup_interval: float | None = 3600.0  # cleanupInterval; None: never clean up
    max_conns: int = DEFAULT_MAX_CONNS  # maxConns
    max_idle: float = 1800.0  # connectionMaxIdleTime (pgx's default)

    @property
    def address(self) -> str:
        params = conninfo_to_dict(self.conninfo)
        return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


class PostgresStore:
    """One table: `value bytea` holds exactly the bytes saved and `json jsonb` the same value
    when it is JSON (NULL otherwise), which the query API reads. Etags come from the table's
    own sequence, so an etag is never reused, not even after a delete. Every blocking call runs
    on a worker thread under a CapacityLimiter as large as the connection pool."""

    features: frozenset[Feature] = frozenset(
        {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}
    )

    def __init__(self, settings: PostgresSettings, *, name: str = "postgresql") -> None:
        self.settings = settings
        self.name = name
        self._table = _identifier(settings.table)
        self._meta = _identifier(settings.metadata_table)
        self._cleanup_key = f"last-cleanup-{settings.table}"
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(settings.conninfo):
            kwargs["connect_timeout"] = max(2, round(settings.timeout))
        self._kwargs = kwargs
        self._pool = ConnectionPool(
            settings.conninfo,
            kwargs=kwargs,
            min_size=0,
            max_size=settings.max_conns,
            max_idle=settings.max_idle,
            timeout=settings.timeout,
            configure=self._configure,
            open=False,
            name=f"state-{name}",
        )
        self._limiter = trio.CapacityLimiter(settings.max_conns)

    @classmethod
    def from_component(cls, component: Component) -> PostgresStore:
        """The store for a `state.postgresql` Component; StateError names a bad metadata value."""
        meta = ComponentMetadata(component)
        error = meta.error

        def seconds(key: str, default: float | None) -> float | None:
            found = meta.optional_duration(key, negative_ok=True)  # -1: cleanup off, as Dapr
            return default if found is None else found

        conninfo = meta.text("connectionString", "")
        if not conninfo:
            raise error("connectionString", "is required")
        try:
            conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise error("connectionString", str(exc)) from None
        timeout = seconds("timeout", None) or seconds("timeoutInSeconds", 20.0) or 20.0
        cleanup = seconds("cleanupInterval", None)
        if cleanup is None:
            cleanup = seconds("cleanupIntervalInSeconds", 3600.0)
        max_conns = meta.text("maxConns", "0")
        if not max_conns.isdigit():
            raise error("maxConns", f"expected a non-negative integer, got {max_conns!r}")
        settings = PostgresSettings(
            conninfo=conninfo,
            table=meta.text("tableName", "state"),
            metadata_table=meta.text("metadataTableName", "dapr_metadata"),
            timeout=timeout,
            cleanup_interval=cleanup if cleanup and cleanup > 0 else None,
            max_conns=int(max_conns) or DEFAULT_MAX_CONNS,
            max_idle=seconds("connectionMaxIdleTime", None) or 1800.0,
        )
        for key, value in (
            ("tableName", settings.table),
            ("metadataTableName", settings.metadata_table),
        ):
            if not all(_IDENTIFIER.fullmatch(part) for part in value.split(".", 1)):
                raise error(key, f"expected a table name, optionally schema.table, got {value!r}")
        return cls(settings, name=component.name)

    # -- lifecycle ---------------------------------------------------------------------------

    async def init(self) -> None:
        """Create the table (and the metadata table) if missing, then open the pool."""
        await self._run(self._create)
        await self._run(self._pool.open)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._pool.close, limiter=self._limiter)

    async def drop_table(self) -> None:
        """Drop this store's table (tests use a table per run)."""
        drop = sql.SQL("DROP TABLE IF EXISTS {}").format(self._table)
        forget = sql.SQL("DELETE FROM {} WHERE key = %s").format(self._meta)
        await self._run(self._execute, [(drop, ()), (forget, (self._cleanup_key,))])

    async def cleanup(self) -> int:
        """Delete every expired row now; returns how many went (reads skip them anyway)."""
        statement = sql.SQL("DELETE FROM {} WHERE expiredate <= now()").format(self._table)
        return await self._run(self._execute, [(statement, ())])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every cleanupInterval, clean up unless another process sharing the table just did
        (the metadata table's `last-cleanup-<table>` row records when)."""
        task_status.started()
        interval = self.settings.cleanup_interval
        if interval is None:
            return
        claim = sql.SQL(
            "INSERT INTO {meta} AS m (key, value) VALUES (%s, now()::text) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value "
            "WHERE m.value::timestamptz <= now() - %s * interval '1 second'"
        ).format(meta=self._meta)
        while True:
            try:
                if await self._run(self._execute, [(claim, (self._cleanup_key, interval))]):
                    await self.cleanup()
            except StateError as exc:
                # The next round tries again; reads never return expired rows anyway.
                log.warning("state store %s: cleanup failed: %s", self.name, exc)
            await trio.sleep(interval)

    # -- the Store protocol ------------------------------------------------------------------

    async def get(self, key: str) -> StateItem | None:
        return (await self.bulk_get([key]))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        if not keys:
            return []
        statement = sql.SQL(f"SELECT {_COLUMNS} FROM {{}} WHERE key = ANY(%s) AND {_LIVE}")
        rows = await self._run(self._fetch, statement.format(self._table), (list(keys),))
        found = {item.key: item for item in map(_item, rows)}
        return [found.get(key) for key in keys]

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[SetRequest | DeleteRequest]) -> None:
        if operations:
            plan = [self._statement(op) for op in operations]
            await self._run(self._apply, operations, plan)

    async def query(self, query: Query) -> QueryResult:
        start = validate_query(query)
        where: list[sql.Composable] = [sql.SQL(f"json IS NOT NULL AND {_LIVE}")]
        params: list[object] = []
        if query.filter is not None:
            where.append(sql_condition(query.filter, params))
        order: list[sql.Composable] = []
        for field, direction in query.sort:
            order.extend(sql_sort_terms(field_path(field), direction == "DESC", params))
        order.append(sql.SQL('key COLLATE "C"'))
        statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT %s OFFSET %s").format(
            sql.SQL(_COLUMNS), self._table, sql.SQL(" AND ").join(where), sql.SQL(", ").join(order)
        )
        # One row more than the page tells whether another page follows.
        page = query.limit or None  # 0 means no limit, as in Dapr
        limit = None if page is None else page + 1
        rows = await self._run(self._fetch, statement, (*params, limit, start))
        items = [_item(row) for row in rows]
        if page is not None and len(items) > page:
            return QueryResult(items=items[:page], token=encode_token(start + page))
        return QueryResult(items=items)

    # -- on worker threads -------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        millis = str(round(self.settings.timeout * 1000))
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (millis,))

    def _create(self) -> None:
        index = sql.Identifier(f"{self.settings.table.rpartition('.')[2]}_expiredate_idx")
        with psycopg.connect(self.settings.conninfo, **self._kwargs) as conn:
            self._configure(conn)
            with conn.transaction():
                # CREATE TABLE IF NOT EXISTS races with itself across processes: serialise.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('meshwire state schema'))")
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (key text NOT NULL PRIMARY KEY, "
                        "value bytea NOT NULL, json jsonb, content_type text, "
                        "etag bigserial NOT NULL, insertdate timestamptz NOT NULL DEFAULT now(), "
                        "updatedate timestamptz, expiredate timestamptz)"
                    ).format(self._table)
                )
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expiredate)").format(
                        index, self._table
                    )
                )
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} "
                        "(key text NOT NULL PRIMARY KEY, value text NOT NULL)"
                    ).format(self._meta)
                )
            try:
                conn.execute(
                    sql.SQL(
                        "SELECT key, value, json, content_type, etag, expiredate FROM {} LIMIT 0"
                    ).format(self._table)
                )
            except psycopg.errors.UndefinedColumn as exc:
                raise StateError(
                    f"state store {self.name}: table {self.settings.table} exists with another "
                    f"layout (a Dapr v1 table?): {exc}"
                ) from None

    def _fetch(self, statement: Statement, params: Sequence[object]) -> list[Row]:
        with self._pool.connection() as conn:
            rows: list[Row] = conn.execute(statement, params).fetchall()
            return rows

    def _execute(self, statements: list[tuple[Statement, Sequence[object]]]) -> int:
        with self._pool.connection() as conn:
            return sum(conn.execute(statement, params).rowcount for statement, params in statements)

    def _apply(
        self,
        operations: Sequence[SetRequest | DeleteRequest],
        plan: list[tuple[Statement, Sequence[object]]],
    ) -> None:
        with self._pool.connection() as conn, conn.transaction():
            # Raising inside the transaction block rolls back every earlier operation.
            for op, (statement, params) in zip(operations, plan, strict=True):
                changed = conn.execute(statement, params).rowcount
                if changed == 0 and _is_conditional(op):
                    if op.etag is not None:
                        raise ETagMismatch(f"etag mismatch for key {printable(op.key)}")
                    raise ETagMismatch(f"first-write: key {printable(op.key)} already exists")

    # -- trio side ---------------------------------------------------------------------------

    def _statement(self, op: SetRequest | DeleteRequest) -> tuple[Statement, Sequence[object]]:
        """The one statement for `op`; it changes no row exactly when op's check fails."""
        etag = None if op.etag is None else _etag(op.key, op.etag)
        if isinstance(op, DeleteRequest):
            if etag is None:
                return sql.SQL("DELETE FROM {} WHERE key = %s").format(self._table), (op.key,)
            text = f"DELETE FROM {{}} WHERE key = %s AND etag = %s AND {_LIVE}"
            return sql.SQL(text).format(self._table), (op.key, etag)
        ttl = op.ttl if op.ttl is not None and op.ttl > 0 else None
        values = (op.value, _json_text(op.value), op.content_type, ttl)
        if etag is not None:
            text = (
                "UPDATE {} SET value = %s, json = %s::jsonb, content_type = %s, "
                f"expiredate = {_EXPIRY}, etag = DEFAULT, updatedate = now() "
                f"WHERE key = %s AND etag = %s AND {_LIVE}"
            )
            return sql.SQL(text).format(self._table), (*values, op.key, etag)
        text = (
            "INSERT INTO {} AS s (value, json, content_type, expiredate, key) "
            f"VALUES (%s, %s::jsonb, %s, {_EXPIRY}, %s) ON CONFLICT (key) DO UPDATE SET "
            "value = excluded.value, json = excluded.json, content_type = excluded.content_type, "
            "expiredate = excluded.expiredate, etag = DEFAULT, updatedate = now()"
        )
        if op.concurrency == "first-write":
            # Only an expired row may be replaced; a concurrent insert of the same key waits
            # for ours to commit and then finds the key taken.
            text += " WHERE s.expiredate IS NOT NULL AND s.expiredate <= now()"
        return sql.SQL(text).format(self._table), (*values, op.key)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        # Not abandoned on cancel: a write in flight must finish (statement_timeout bounds it)
        # before the caller learns anything, or the caller could not tell whether it applied.
        try:
            return await trio.to_thread.run_sync(call, *args, limiter=self._limiter)
        except psycopg.Error as exc:
            raise StateError(
                f"state store {self.name}: postgresql at {self.settings.address}: {exc}"
            ) from exc


def _is_conditional(op: SetRequest | DeleteRequest) -> bool:
    """Whether `op` changes no row when its check fails (an unconditional delete of a missing
    key changes none either, and is not an error)."""
    return op.etag is not None or (isinstance(op, SetRequest) and op.concurrency == "first-write")


def _identifier(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split(".", 1))


def _etag(key: str, etag: str) -> int:
    """The etag as the number it must be; "" can never match (ETagMismatch)."""
    if etag == "":
        raise ETagMismatch(f"etag mismatch for key {printable(key)}")
    text = etag.strip()
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_ETAG:
        raise ETagInvalid(
            f"invalid etag {printable(etag)} for key {printable(key)}: postgresql etags are numbers"
        )
    return int(text)


def _json_text(value: bytes) -> str | None:
    """`value` as text PostgreSQL's jsonb accepts, or None when it is not JSON (or holds what
    jsonb refuses: \\u0000, lone surrogates, numbers beyond a double)."""
    decoded = decode_json(value)
    if decoded is NOT_JSON:
        return None
    try:
        text = json.dumps(decoded, ensure_ascii=False, allow_nan=False)
        text.encode()
    except (ValueError, UnicodeEncodeError):
        return None
    return None if "\\u0000" in text else text


def _item(row: Row) -> StateItem:
    key, value, etag, content_type, expires_at = row
    return StateItem(
        key=key,
        value=bytes(value),
        etag=str(etag),
        content_type=content_type,
        expires_at=float(expires_at) if expires_at is not None else None,
    )
