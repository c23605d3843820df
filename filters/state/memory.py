"""`state.in-memory`: a dict-backed store for tests and single-process use (nothing persists)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from config.dapr.component import Component
from filters.dapr.params import printable
from filters.state.query import (
    NOT_JSON,
    decode_json,
    encode_token,
    matches,
    sort_values,
    validate_query,
)
from filters.state.store import (
    DeleteRequest,
    ETagMismatch,
    Feature,
    Query,
    QueryResult,
    SetRequest,
    StateItem,
)

__all__ = ["MemoryStore"]


@dataclass(frozen=True, slots=True)
class _Entry:
    item: StateItem
    decoded: object  # the value as JSON, or NOT_JSON; decoded once, at write time


class MemoryStore:
    """Dapr's in-memory state store. Every operation runs without a checkpoint, so each one
    (and each transaction) is atomic with respect to the other tasks of this process."""

    features: frozenset[Feature] = frozenset(
        {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}
    )

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._etags = itertools.count(1)

    @classmethod
    def from_component(
        cls, component: Component, *, clock: Callable[[], float] = time.time
    ) -> MemoryStore:
        """The store for a `state.in-memory` Component (it takes no metadata of its own)."""
        return cls(clock=clock)

    async def init(self) -> None:
        pass

    async def aclose(self) -> None:
        self._entries.clear()

    async def get(self, key: str) -> StateItem | None:
        entry = self._live(key, self._clock())
        return entry.item if entry else None

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        return [await self.get(key) for key in keys]

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[SetRequest | DeleteRequest]) -> None:
        # Stage every change in an overlay first: one failing check leaves the store untouched.
        staged: dict[str, _Entry | None] = {}
        now = self._clock()
        for op in operations:
            current = staged[op.key] if op.key in staged else self._live(op.key, now)
            _check(op, current)
            staged[op.key] = self._entry(op, now) if isinstance(op, SetRequest) else None
        for key, entry in staged.items():
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry

    async def query(self, query: Query) -> QueryResult:
        start = validate_query(query)
        now = self._clock()
        found = [
            entry
            for key in list(self._entries)
            if (entry := self._live(key, now)) is not None
            and entry.decoded is not NOT_JSON
            and matches(query.filter, entry.decoded)
        ]
        ordered = sort_values(found, query.sort, lambda e: e.item.key, lambda e: e.decoded)
        end = start + query.limit if query.limit else len(ordered)  # Dapr: 0 is no limit
        page = [entry.item for entry in ordered[start:end]]
        return QueryResult(items=page, token=encode_token(end) if end < len(ordered) else None)

    def _entry(self, request: SetRequest, now: float) -> _Entry:
        expires_at = now + request.ttl if request.ttl is not None and request.ttl > 0 else None
        item = StateItem(
            key=request.key,
            value=bytes(request.value),
            etag=str(next(self._etags)),
            content_type=request.content_type,
            expires_at=expires_at,
        )
        return _Entry(item, decode_json(item.value))

    def _live(self, key: str, now: float) -> _Entry | None:
        """The entry under `key` unless it has expired (an expired one is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.item.expires_at is not None and entry.item.expires_at <= now:
            del self._entries[key]
            return None
        return entry


def _check(op: SetRequest | DeleteRequest, current: _Entry | None) -> None:
    """Dapr's etag and first-write rules for one operation against the live entry."""
    if op.etag is not None:
        if current is None or current.item.etag != op.etag:
            raise ETagMismatch(f"etag mismatch for key {printable(op.key)}")
    elif isinstance(op, SetRequest) and op.concurrency == "first-write" and current is not None:
        raise ETagMismatch(f"first-write: key {printable(op.key)} already exists")
