"""The state store conformance suite: the same Dapr semantics, checked on every backend."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from filters.state.query import QueryError
from filters.state.store import (
    DeleteRequest,
    ETagMismatch,
    Feature,
    NotSupported,
    Query,
    SetRequest,
    StateItem,
    Store,
)
from tests.state.stores import STORES, StoreFactory

WRITERS = 20


@pytest.fixture(params=STORES, ids=str)
def factory(request: pytest.FixtureRequest) -> StoreFactory:
    chosen: StoreFactory = request.param
    chosen.require()
    return chosen


@pytest.fixture
async def store(factory: StoreFactory, tmp_path: Path) -> AsyncIterator[Store]:
    async with factory.open(tmp_path) as opened:
        yield opened


async def must_get(store: Store, key: str) -> StateItem:
    item = await store.get(key)
    assert item is not None, f"{key!r} is missing"
    return item


async def wait_until_gone(store: Store, key: str) -> None:
    """Poll with the real clock until `key` reads as missing; fail past the deadline."""
    with trio.fail_after(15):
        while True:
            if await store.get(key) is None:
                return
            await trio.sleep(0.05)


# -- CRUD and etags ------------------------------------------------------------------------------


async def test_get_missing_is_none(store: Store) -> None:
    assert await store.get("nothing-here") is None


async def test_set_get_round_trip_with_etag(store: Store) -> None:
    await store.set(SetRequest("k", b'{"a":1}'))
    item = await must_get(store, "k")
    assert (item.key, item.value) == ("k", b'{"a":1}')
    assert isinstance(item.etag, str)
    assert item.etag


async def test_etag_changes_on_every_write(store: Store) -> None:
    etags = []
    for value in (b"1", b"1", b"2"):
        await store.set(SetRequest("k", value))
        etags.append((await must_get(store, "k")).etag)
    assert len(set(etags)) == 3


async def test_set_with_current_etag_succeeds_and_stale_fails(store: Store) -> None:
    await store.set(SetRequest("k", b'"v1"'))
    stale = (await must_get(store, "k")).etag
    await store.set(SetRequest("k", b'"v2"', etag=stale))
    current = await must_get(store, "k")
    assert current.value == b'"v2"'
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest("k", b'"v3"', etag=stale))
    assert await must_get(store, "k") == current


async def test_set_with_etag_on_missing_key_fails(store: Store) -> None:
    await store.set(SetRequest("k", b"1"))
    etag = (await must_get(store, "k")).etag
    await store.delete(DeleteRequest("k"))
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest("k", b"2", etag=etag))
    assert await store.get("k") is None


async def test_first_write_without_etag(store: Store) -> None:
    await store.set(SetRequest("k", b"1", concurrency="first-write"))
    first = await must_get(store, "k")
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest("k", b"2", concurrency="first-write"))
    assert await must_get(store, "k") == first


async def test_delete_with_right_and_wrong_etag(store: Store) -> None:
    await store.set(SetRequest("k", b"1"))
    stale = (await must_get(store, "k")).etag
    await store.set(SetRequest("k", b"2"))
    with pytest.raises(ETagMismatch):
        await store.delete(DeleteRequest("k", etag=stale))
    assert (await must_get(store, "k")).value == b"2"
    await store.delete(DeleteRequest("k", etag=(await must_get(store, "k")).etag))
    assert await store.get("k") is None
    with pytest.raises(ETagMismatch):
        await store.delete(DeleteRequest("k", etag=stale))


async def test_delete_missing_without_etag_is_fine(store: Store) -> None:
    await store.delete(DeleteRequest("never-there"))
    assert await store.get("never-there") is None


async def test_bulk_get_keeps_order_and_marks_missing(store: Store) -> None:
    await store.set(SetRequest("k1", b"1"))
    await store.set(SetRequest("k2", b"2"))
    items = await store.bulk_get(["k2", "missing", "k1", "k2"])
    assert [None if item is None else (item.key, item.value) for item in items] == [
        ("k2", b"2"),
        None,
        ("k1", b"1"),
        ("k2", b"2"),
    ]
    assert await store.bulk_get([]) == []


# -- transactions --------------------------------------------------------------------------------


async def test_transaction_applies_upserts_and_deletes_together(store: Store) -> None:
    await store.set(SetRequest("a", b"1"))
    await store.set(SetRequest("b", b"1"))
    b_etag = (await must_get(store, "b")).etag
    await store.transact(
        [
            SetRequest("b", b"2", etag=b_etag),
            DeleteRequest("a"),
            SetRequest("c", b"3"),
        ]
    )
    a, b, c = await store.bulk_get(["a", "b", "c"])
    assert a is None
    assert b is not None
    assert (b.value, b.etag != b_etag) == (b"2", True)
    assert c is not None
    assert c.value == b"3"


async def test_transaction_with_a_failing_op_applies_nothing(store: Store) -> None:
    await store.set(SetRequest("a", b"1"))
    await store.set(SetRequest("b", b"1"))
    stale = (await must_get(store, "b")).etag
    await store.set(SetRequest("b", b"2"))
    before = await store.bulk_get(["a", "b", "c"])
    with pytest.raises(ETagMismatch):
        await store.transact(
            [
                SetRequest("c", b"new"),
                DeleteRequest("a"),
                SetRequest("b", b"3", etag=stale),
            ]
        )
    assert await store.bulk_get(["a", "b", "c"]) == before


async def race(store: Store, request: SetRequest) -> tuple[int, int]:
    """WRITERS tasks send `request` at once: (wins, etag conflicts)."""
    wins = conflicts = 0
    start = trio.Event()

    async def writer() -> None:
        nonlocal wins, conflicts
        await start.wait()
        try:
            await store.set(request)
        except ETagMismatch:
            conflicts += 1
        else:
            wins += 1

    async with trio.open_nursery() as nursery:
        for _ in range(WRITERS):
            nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        start.set()
    return wins, conflicts


async def test_concurrent_writers_with_the_same_etag_one_wins(store: Store) -> None:
    await store.set(SetRequest("k", b"0"))
    etag = (await must_get(store, "k")).etag
    assert await race(store, SetRequest("k", b"1", etag=etag)) == (1, WRITERS - 1)
    assert (await must_get(store, "k")).value == b"1"


async def test_concurrent_first_writers_one_wins(store: Store) -> None:
    request = SetRequest("k", b"1", concurrency="first-write")
    assert await race(store, request) == (1, WRITERS - 1)


# -- TTL -----------------------------------------------------------------------------------------


@pytest.fixture
def expiring(factory: StoreFactory) -> None:
    if Feature.TTL not in factory.features():
        pytest.skip(f"{factory} has no TTL feature")


@pytest.mark.usefixtures("expiring")
async def test_ttl_item_expires(store: Store) -> None:
    await store.set(SetRequest("short", b"1", ttl=1))
    await store.set(SetRequest("forever", b"1"))
    short = await must_get(store, "short")
    assert short.expires_at is not None
    assert (await must_get(store, "forever")).expires_at is None
    await wait_until_gone(store, "short")
    assert await store.bulk_get(["short"]) == [None]
    assert await store.get("forever") is not None


@pytest.mark.usefixtures("expiring")
async def test_save_without_ttl_removes_the_ttl(store: Store) -> None:
    await store.set(SetRequest("k", b"1", ttl=1))
    await store.set(SetRequest("k", b"2"))
    assert (await must_get(store, "k")).expires_at is None
    # A witness saved later with the same TTL: once it is gone, k's old TTL has passed too.
    await store.set(SetRequest("witness", b"1", ttl=1))
    await wait_until_gone(store, "witness")
    assert (await must_get(store, "k")).value == b"2"


# -- values and keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(os.urandom(1 << 20), id="1MB-binary"),
        pytest.param(json.dumps({"blob": "x" * (1 << 20)}).encode(), id="1MB-json"),
        pytest.param(b"\xff\xfe\x00\x80 not utf-8 \xc3", id="binary"),
        pytest.param(b'{ "z" : 1,\n  "a":[1, 2.50, "\\u00e9"] }', id="json-object"),
        pytest.param(b'"just a string"', id="json-string"),
        pytest.param(b"42", id="json-number"),
        pytest.param(b"plain text, not JSON", id="text"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_values_come_back_byte_identical(store: Store, value: bytes) -> None:
    await store.set(SetRequest("k", value))
    assert (await must_get(store, "k")).value == value
    assert [item.value if item else None for item in await store.bulk_get(["k"])] == [value]


async def test_unicode_keys(store: Store) -> None:
    keys = ["ключ", "鍵-🔑", "app||naïve key with spaces"]
    for i, key in enumerate(keys):
        await store.set(SetRequest(key, str(i).encode()))
    items = await store.bulk_get(keys)
    assert [(item.key, item.value) if item else None for item in items] == [
        (key, str(i).encode()) for i, key in enumerate(keys)
    ]
    await store.delete(DeleteRequest(keys[1]))
    assert await store.get(keys[1]) is None
    assert await store.get(keys[0]) is not None


async def test_keys_differing_by_prefix_do_not_interfere(store: Store) -> None:
    keys = ["app1||key", "app2||key", "key", "app1||key2"]
    for key in keys:
        await store.set(SetRequest(key, key.encode()))
    await store.delete(DeleteRequest("app1||key"))
    items = await store.bulk_get(keys)
    assert [item.value if item else None for item in items] == [
        None,
        b"app2||key",
        b"key",
        b"app1||key2",
    ]


async def test_query_needs_the_feature(store: Store) -> None:
    if Feature.QUERY_API in store.features:
        assert (await store.query(Query())).items == []
    else:
        with pytest.raises(NotSupported):
            await store.query(Query())


# -- query API -----------------------------------------------------------------------------------

PEOPLE: dict[str, dict[str, Any]] = {
    f"p{i}": {"person": {"org": org, "id": i}, "state": state}
    for i, (org, state) in enumerate(
        [
            ("Dev Ops", "CA"),
            ("Hardware", "WA"),
            ("Dev Ops", "WA"),
            ("Finance", "CA"),
            ("Hardware", "OR"),
            ("Dev Ops", "OR"),
            ("Finance", "WA"),
        ]
    )
}


def _declares_query(factory: StoreFactory) -> bool:
    try:
        return Feature.QUERY_API in factory.features()
    except ImportError:  # the backend is missing: require() reports it when the test runs
        return True


# The query cases run on the stores that declare the query API (every other store refuses
# queries with NotSupported: test_query_needs_the_feature).
QUERY_STORES = [f for f in STORES if _declares_query(f)]


@pytest.fixture(params=QUERY_STORES, ids=str)
def query_factory(request: pytest.FixtureRequest) -> StoreFactory:
    chosen: StoreFactory = request.param
    chosen.require()  # outside trio, as `factory` does
    return chosen


@pytest.fixture
async def query_store(query_factory: StoreFactory, tmp_path: Path) -> AsyncIterator[Store]:
    async with query_factory.open(tmp_path) as opened:
        yield opened


@pytest.fixture
async def people(query_store: Store) -> Store:
    store = query_store
    assert Feature.QUERY_API in store.features
    for key, value in PEOPLE.items():
        await store.set(SetRequest(key, json.dumps(value).encode()))
    await store.set(SetRequest("binary", b"\xff\x00"))
    await store.set(SetRequest("number", b"7"))
    return store


async def query_keys(store: Store, query: Query) -> list[str]:
    result = await store.query(query)
    assert result.token is None
    return [item.key for item in result.items]


def by_id(key: str) -> int:
    return int(PEOPLE[key]["person"]["id"])


def expect(predicate: Any) -> set[str]:
    return {key for key, value in PEOPLE.items() if predicate(value)}


async def test_query_eq_on_a_nested_field(people: Store) -> None:
    result = await people.query(Query(filter={"EQ": {"person.org": "Dev Ops"}}))
    assert {item.key for item in result.items} == {"p0", "p2", "p5"}
    item = next(item for item in result.items if item.key == "p2")
    assert json.loads(item.value) == PEOPLE["p2"]
    assert item.etag == (await must_get(people, "p2")).etag
    assert await query_keys(people, Query(filter={"EQ": {"person.id": 3}})) == ["p3"]
    assert await query_keys(people, Query(filter={"EQ": {"person.id": "3"}})) == []
    assert await query_keys(people, Query(filter={"EQ": {"no.such": "x"}})) == []


async def test_query_in(people: Store) -> None:
    keys = await query_keys(people, Query(filter={"IN": {"state": ["CA", "OR"]}}))
    assert set(keys) == expect(lambda v: v["state"] in ("CA", "OR"))


async def test_query_and_or(people: Store) -> None:
    both = {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["WA", "OR"]}}]}
    assert set(await query_keys(people, Query(filter=both))) == {"p2", "p5"}
    either = {"OR": [{"EQ": {"person.org": "Finance"}}, {"EQ": {"state": "OR"}}]}
    assert set(await query_keys(people, Query(filter=either))) == {"p3", "p4", "p5", "p6"}
    nested = {"OR": [both, {"AND": [{"EQ": {"state": "CA"}}, {"EQ": {"person.id": 3}}]}]}
    assert set(await query_keys(people, Query(filter=nested))) == {"p2", "p3", "p5"}


async def test_query_sort(people: Store) -> None:
    wa = Query(filter={"EQ": {"state": "WA"}}, sort=[("person.id", "ASC")])
    asc = await query_keys(people, wa)
    assert asc == [key for key in sorted(PEOPLE, key=by_id) if PEOPLE[key]["state"] == "WA"]
    desc = await query_keys(people, Query(sort=[("state", "DESC"), ("person.id", "DESC")]))
    people_desc = [key for key in desc if key in PEOPLE]
    assert people_desc == sorted(
        PEOPLE,
        key=lambda k: (PEOPLE[k]["state"], by_id(k)),
        reverse=True,
    )


async def test_query_pagination_covers_every_result_once(people: Store) -> None:
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = await people.query(
            Query(
                filter={"OR": [{"EQ": {"state": s}} for s in ("CA", "WA", "OR")]},
                sort=[("person.id", "ASC")],
                limit=3,
                token=token,
            )
        )
        pages += 1
        assert len(page.items) <= 3
        seen.extend(item.key for item in page.items)
        token = page.token
        if token is None:
            break
        assert pages < 10
    assert seen == sorted(PEOPLE, key=by_id)
    assert pages == 3


@pytest.mark.parametrize(
    "query",
    [
        Query(filter={"NOT": {"EQ": {"state": "CA"}}}),
        Query(sort=[("state", "ASC, key")]),
        Query(limit=-1),
        Query(token="not-a-token"),
    ],
    ids=["unknown-operator", "sort-order", "negative-limit", "token"],
)
async def test_query_refuses_a_malformed_query(query_store: Store, query: Query) -> None:
    """Queries built in code, not parsed (filters.state.query.validate_query checks them)."""
    with pytest.raises(QueryError):
        await query_store.query(query)


async def test_query_limit_zero_means_no_limit(people: Store) -> None:
    result = await people.query(Query(filter={"EQ": {"state": "WA"}}, limit=0))
    assert ({item.key for item in result.items}, result.token) == (
        expect(lambda v: v["state"] == "WA"),
        None,
    )
