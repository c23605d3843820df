"""The in-memory store beyond the conformance suite: TTL on an injected clock, its component."""

from __future__ import annotations

import pytest

from filters.state.memory import MemoryStore
from filters.state.query import QueryError
from filters.state.store import ETagMismatch, Feature, Query, SetRequest
from tests.state.stores import component


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_follows_the_injected_clock() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.set(SetRequest("k", b"1", ttl=5))
    item = await store.get("k")
    assert item is not None
    assert item.expires_at == 1_005.0
    clock.now = 1_004.9
    assert await store.get("k") is not None
    clock.now = 1_005.0
    assert await store.get("k") is None
    assert (await store.query(Query())).items == []
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest("k", b"2", etag=item.etag))
    await store.set(SetRequest("k", b"2", concurrency="first-write"))
    assert (await store.bulk_get(["k"]))[0] is not None


async def test_a_transaction_sees_its_own_earlier_operations() -> None:
    store = MemoryStore()
    await store.set(SetRequest("k", b"1"))
    item = await store.get("k")
    assert item is not None
    # The second upsert's etag is gone once the first one replaced it: nothing applies.
    with pytest.raises(ETagMismatch):
        await store.transact(
            [SetRequest("k", b"2", etag=item.etag), SetRequest("k", b"3", etag=item.etag)]
        )
    assert await store.get("k") == item


async def test_from_component() -> None:
    store = MemoryStore.from_component(component("state.in-memory", {}))
    await store.init()
    assert store.features == {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}
    await store.aclose()


async def test_query_validates_its_filter() -> None:
    with pytest.raises(QueryError):
        await MemoryStore().query(Query(filter={"LIKE": {"a": "b"}}))
