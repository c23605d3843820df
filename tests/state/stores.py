"""The state stores the conformance suite runs: factories of fresh, isolated, initialised stores."""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from config.dapr.component import Component
from filters.state.memory import MemoryStore
from filters.state.sqlite import SqliteStore
from filters.state.store import (
    DeleteRequest,
    Feature,
    Query,
    QueryResult,
    SetRequest,
    StateItem,
    Store,
)

REDIS_ADDRESS = ("127.0.0.1", 6379)
POSTGRES_ADDRESS = ("127.0.0.1", 5432)
POSTGRES_DSN = "host=127.0.0.1 user=postgres dbname=test"


def _nothing_required() -> None:
    pass


@dataclass(frozen=True)
class StoreFactory:
    """`open(tmp_path)` yields a fresh store that no other test sees, and cleans it up after.

    `require()` runs first, outside trio (pytest-trio drops the reason of a skip raised in an
    async fixture): it skips, or in CI fails, when the backend or its service is missing."""

    name: str
    open: Callable[[Path], AbstractAsyncContextManager[Store]]
    store_class: Callable[[], type[Any]]  # the backend class, for its declared features
    require: Callable[[], None] = _nothing_required

    def features(self) -> frozenset[Feature]:
        return frozenset(self.store_class().features)

    def __str__(self) -> str:
        return self.name


def component(type_: str, metadata: dict[str, str], name: str = "conformance") -> Component:
    return Component(
        name=name,
        namespace="default",
        type=type_,
        version="v1",
        init_timeout=5.0,
        ignore_errors=False,
        metadata=metadata,
        secret_refs={},
        scopes=(),
    )


@asynccontextmanager
async def memory_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = MemoryStore.from_component(component("state.in-memory", {}))
    await store.init()
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    # A unique table in a per-test file: tmp_path already isolates, the table name proves
    # tableName is honoured.
    table = f"conformance_{uuid.uuid4().hex[:12]}"
    meta = {"connectionString": str(tmp_path / "state.db"), "tableName": table}
    store = SqliteStore.from_component(component("state.sqlite", meta), data_dir=tmp_path)
    await store.init()
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def redis_store(tmp_path: Path) -> AsyncIterator[Store]:
    module = importlib.import_module("filters.state.redis")
    host, port = REDIS_ADDRESS
    meta = {"redisHost": f"{host}:{port}"}
    store: Any = module.RedisStore.from_component(component("state.redis", meta))
    await store.init()
    prefixed = PrefixedStore(store, f"conformance-{uuid.uuid4().hex}||")
    try:
        yield prefixed
    finally:
        await prefixed.purge()
        await store.aclose()


@asynccontextmanager
async def postgres_store(tmp_path: Path) -> AsyncIterator[Store]:
    module = importlib.import_module("filters.state.postgres")
    meta = {"connectionString": POSTGRES_DSN, "tableName": f"conformance_{uuid.uuid4().hex[:12]}"}
    store: Any = module.PostgresStore.from_component(component("state.postgresql", meta))
    await store.init()
    try:
        yield store
    finally:
        await store.drop_table()
        await store.aclose()


STORES: list[StoreFactory] = [
    StoreFactory("memory", memory_store, lambda: MemoryStore),
    StoreFactory("sqlite", sqlite_store, lambda: SqliteStore),
    StoreFactory(
        "redis",
        redis_store,
        lambda: importlib.import_module("filters.state.redis").RedisStore,
        lambda: _require("filters.state.redis", "Redis", REDIS_ADDRESS),
    ),
    StoreFactory(
        "postgresql",
        postgres_store,
        lambda: importlib.import_module("filters.state.postgres").PostgresStore,
        lambda: _require("filters.state.postgres", "PostgreSQL", POSTGRES_ADDRESS),
    ),
]


class PrefixedStore:
    """A shared store seen through a unique key prefix; `purge` deletes every key it wrote."""

    def __init__(self, inner: Store, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix
        self.features: frozenset[Feature] = inner.features
        self._written: set[str] = set()

    async def init(self) -> None:
        await self.inner.init()

    async def get(self, key: str) -> StateItem | None:
        return self._strip(await self.inner.get(self.prefix + key))

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        items = await self.inner.bulk_get([self.prefix + key for key in keys])
        return [self._strip(item) for item in items]

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.inner.delete(dataclasses.replace(request, key=self.prefix + request.key))

    async def transact(self, operations: Sequence[SetRequest | DeleteRequest]) -> None:
        self._written.update(self.prefix + op.key for op in operations)
        ops = [dataclasses.replace(op, key=self.prefix + op.key) for op in operations]
        await self.inner.transact(ops)

    async def query(self, query: Query) -> QueryResult:
        result = await self.inner.query(query)
        mine = [
            dataclasses.replace(item, key=item.key.removeprefix(self.prefix))
            for item in result.items
            if item.key.startswith(self.prefix)
        ]
        return QueryResult(mine, result.token)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def purge(self) -> None:
        for key in sorted(self._written):
            await self.inner.delete(DeleteRequest(key))

    def _strip(self, item: StateItem | None) -> StateItem | None:
        if item is None:
            return None
        return dataclasses.replace(item, key=item.key.removeprefix(self.prefix))


def _require(module: str, service: str, address: tuple[str, int]) -> None:
    """Skip while the backend module does not exist yet (ImportError only); when its service
    is unreachable, fail in CI (it must be there) and skip elsewhere."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not available: {exc}")
    require_service(service, address)


def require_service(service: str, address: tuple[str, int]) -> None:
    """Skip when the service is unreachable; in CI (CI=true) it must be there, so fail."""
    try:
        socket.create_connection(address, timeout=3).close()
    except OSError as exc:
        reason = f"{service} is not reachable at {address[0]}:{address[1]}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll `condition` until it holds; the caller's deadline bounds the wait."""
    while True:
        if condition():
            return
        await trio.sleep(0.01)
