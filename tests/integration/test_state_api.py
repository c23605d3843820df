"""Dapr's state HTTP API on in-process sidecars: in-memory and SQLite stores from Components."""

from __future__ import annotations

import gc
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
import trio
from opentelemetry import trace

from filters.state.registry import StateStoreInitError
from proxy.app import build
from proxy.server import Bound, serve
from tests.integration.harness import H1Client, Reply, Running
from tests.integration.sidecars import generated, sidecar, sidecar_args
from tests.integration.test_tracing import Spans

STORES = ("memstore", "sqlstore")
DEADLINE = 10


def component(name: str, type_: str, **metadata: str) -> str:
    items = "".join(f"    - {{name: {k}, value: {json.dumps(v)}}}\n" for k, v in metadata.items())
    items = items or "    []\n"
    return (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata: {{name: {name}}}\nspec:\n  type: {type_}\n  version: v1\n"
        f"  metadata:\n{items}"
    )


def resources(where: Path, *documents: str) -> tuple[str, str]:
    """A resources directory holding `documents`, as the `--resources-path` flag for it."""
    where.mkdir(parents=True, exist_ok=True)
    for i, document in enumerate(documents):
        (where / f"component-{i}.yaml").write_text(document)
    return "--resources-path", str(where)


def two_stores(tmp_path: Path, database: Path | None = None) -> tuple[str, str]:
    db = database or tmp_path / "shared.db"
    return resources(
        tmp_path / "resources",
        component("memstore", "state.in-memory"),
        component("sqlstore", "state.sqlite", connectionString=str(db)),
    )


async def call(
    port: int,
    method: str,
    target: str,
    body: object = None,
    headers: list[tuple[str, str]] | None = None,
) -> Reply:
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    async with H1Client.connect(port) as client:
        return await client.request(method, target, headers or [], data)


def error(reply: Reply) -> tuple[int, str]:
    return reply.status, json.loads(reply.body)["errorCode"]


@asynccontextmanager
async def stores_sidecar(tmp_path: Path, app_id: str = "orders") -> AsyncIterator[int]:
    async with sidecar(app_id, None, tmp_path, *two_stores(tmp_path)) as running:
        yield running.port("dapr-http")


# --- values, etags, TTL -----------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_values_come_back_as_saved_with_etag_and_content_type(
    tmp_path: Path, store: str
) -> None:
    async with stores_sidecar(tmp_path) as port:
        items = [
            {"key": "text", "value": "x"},
            {"key": "object", "value": {"a": 1, "b": [True, None]}},
            {"key": "number", "value": 42.5},
            {"key": "raw", "value": "plain bytes", "metadata": {"contentType": "text/plain"}},
        ]
        saved = await call(port, "POST", f"/v1.0/state/{store}", items)
        replies = {
            i["key"]: await call(port, "GET", f"/v1.0/state/{store}/{i['key']}") for i in items
        }
        put = await call(port, "PUT", f"/v1.0/state/{store}", [{"key": "text", "value": "y"}])
        again = await call(port, "GET", f"/v1.0/state/{store}/text")
        missing = await call(port, "GET", f"/v1.0/state/{store}/nothing")
        empty = await call(port, "POST", f"/v1.0/state/{store}", [])
    assert saved.status == 204, saved.body
    assert replies["text"].body == b'"x"'  # a JSON string is stored as its JSON text
    assert json.loads(replies["object"].body) == {"a": 1, "b": [True, None]}
    assert json.loads(replies["number"].body) == 42.5
    assert replies["raw"].body == b"plain bytes"
    assert replies["raw"].header(b"content-type") == b"text/plain"
    assert replies["text"].header(b"content-type") == b"application/json"
    assert all(r.status == 200 and r.header(b"etag") for r in replies.values())
    assert replies["text"].header(b"metadata.ttlexpiretime") is None
    assert (put.status, again.body) == (204, b'"y"')
    assert again.header(b"etag") != replies["text"].header(b"etag")
    assert (missing.status, missing.body) == (204, b"")
    assert empty.status == 204


@pytest.mark.parametrize("store", STORES)
async def test_etags_decide_saves_and_deletes(tmp_path: Path, store: str) -> None:
    base = f"/v1.0/state/{store}"
    async with stores_sidecar(tmp_path) as port:
        await call(port, "POST", base, [{"key": "k", "value": 1}])
        etag = (await call(port, "GET", f"{base}/k")).header(b"etag")
        assert etag is not None
        stale = await call(port, "POST", base, [{"key": "k", "value": 2, "etag": "not-it"}])
        first = [{"key": "k", "value": 3, "options": {"concurrency": "first-write"}}]
        first_write = await call(port, "POST", base, first)
        matched = await call(port, "POST", base, [{"key": "k", "value": 4, "etag": etag.decode()}])
        current = await call(port, "GET", f"{base}/k")
        wrong_delete = await call(port, "DELETE", f"{base}/k", headers=[("if-match", "not-it")])
        empty_if_match = await call(port, "DELETE", f"{base}/k", headers=[("if-match", "")])
        kept = await call(port, "GET", f"{base}/k")
        new_etag = current.header(b"etag")
        assert new_etag is not None
        deleted = await call(port, "DELETE", f"{base}/k", headers=[("if-match", new_etag.decode())])
        gone = await call(port, "GET", f"{base}/k")
        absent = await call(port, "DELETE", f"{base}/k")
    assert error(stale) == (409, "ERR_STATE_SAVE")
    assert json.loads(stale.body)["message"] == (
        f"failed saving state in state store {store}: possible etag mismatch"
    )  # daprd's wording; never the stored key with its app-id prefix
    assert error(first_write) == (409, "ERR_STATE_SAVE")
    assert matched.status == 204
    assert current.body == b"4"
    assert new_etag != etag
    assert error(wrong_delete) == (409, "ERR_STATE_DELETE")
    assert error(empty_if_match) == (409, "ERR_STATE_DELETE")  # present, though empty
    assert kept.body == b"4"
    assert (deleted.status, gone.status, absent.status) == (204, 204, 204)


@pytest.mark.parametrize("store", STORES)
async def test_ttl_is_reported_and_expires_the_key(tmp_path: Path, store: str) -> None:
    base = f"/v1.0/state/{store}"
    async with stores_sidecar(tmp_path) as port:
        before = time.time()
        saved = await call(
            port, "POST", f"{base}?metadata.ttlInSeconds=100", [{"key": "long", "value": 1}]
        )
        long = await call(port, "GET", f"{base}/long")
        short = [{"key": "short", "value": 1, "metadata": {"ttlInSeconds": "1"}}]
        await call(port, "POST", base, short)
        bad = await call(port, "POST", f"{base}?metadata.ttlInSeconds=soon", [{"key": "x"}])
        with trio.fail_after(DEADLINE):
            while True:  # expiry has no event to wait on: poll until the key is gone
                if (await call(port, "GET", f"{base}/short")).status == 204:
                    break
                await trio.sleep(0.1)
    assert saved.status == 204
    header = long.header(b"metadata.ttlexpiretime")
    assert header is not None
    expires = datetime.strptime(header.decode(), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert before + 99 <= expires <= time.time() + 100
    assert error(bad) == (400, "ERR_MALFORMED_REQUEST")


async def test_expired_rows_are_purged_in_the_background(tmp_path: Path) -> None:
    db = tmp_path / "purged.db"
    flags = resources(
        tmp_path / "resources",
        component("sqlstore", "state.sqlite", connectionString=str(db), cleanupInterval="100ms"),
    )

    def rows() -> int:
        with sqlite3.connect(db) as conn:
            count: int = conn.execute("SELECT count(*) FROM state").fetchone()[0]
        return count

    async with sidecar("orders", None, tmp_path, *flags) as running:
        port = running.port("dapr-http")
        item = [{"key": "k", "value": 1, "metadata": {"ttlInSeconds": "1"}}]
        await call(port, "POST", "/v1.0/state/sqlstore", item)
        assert rows() == 1
        with trio.fail_after(DEADLINE):
            while True:  # the runtime's cleanup task has no event to wait on: poll the file
                if rows() == 0:
                    break
                await trio.sleep(0.1)


# --- bulk get, transactions, query --------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_bulk_get_answers_every_key_in_order(tmp_path: Path, store: str) -> None:
    base = f"/v1.0/state/{store}"
    async with stores_sidecar(tmp_path) as port:
        items = [{"key": f"k{i}", "value": {"n": i}} for i in range(5)]
        await call(port, "POST", base, items)
        keys = ["k3", "missing", "k0", "k4", "k1"]
        reply = await call(port, "POST", f"{base}/bulk", {"keys": keys, "parallelism": 2})
        empty = await call(port, "PUT", f"{base}/bulk", {"keys": []})
        illegal = await call(port, "POST", f"{base}/bulk", {"keys": ["a||b"]})
    assert reply.status == 200
    answer = json.loads(reply.body)
    assert [e["key"] for e in answer] == keys
    assert answer[1] == {"key": "missing"}
    assert [e["data"] for e in answer if "data" in e] == [{"n": 3}, {"n": 0}, {"n": 4}, {"n": 1}]
    assert all(e["etag"] for e in answer if "data" in e)
    assert (empty.status, json.loads(empty.body)) == (200, [])
    assert error(illegal) == (400, "ERR_MALFORMED_REQUEST")


@pytest.mark.parametrize("store", STORES)
async def test_a_transaction_applies_all_or_nothing(tmp_path: Path, store: str) -> None:
    base = f"/v1.0/state/{store}"
    async with stores_sidecar(tmp_path) as port:
        await call(port, "POST", base, [{"key": "a", "value": "old"}])

        def upsert(key: str, value: object, **extra: object) -> dict[str, object]:
            return {"operation": "upsert", "request": {"key": key, "value": value, **extra}}

        failing = {
            "operations": [
                upsert("b", "new"),
                {"operation": "delete", "request": {"key": "a"}},
                upsert("c", "new", etag="not-it"),
            ]
        }
        failed = await call(port, "POST", f"{base}/transaction", failing)
        after_failure = [(await call(port, "GET", f"{base}/{k}")).body for k in "abc"]
        delete_a = {"operation": "delete", "request": {"key": "a"}}
        good = {"operations": [upsert("b", "new"), delete_a]}
        done = await call(port, "PUT", f"{base}/transaction", good)
        after = [(await call(port, "GET", f"{base}/{k}")).body for k in "ab"]
        unknown = await call(
            port, "POST", f"{base}/transaction", {"operations": [{"operation": "merge"}]}
        )
        nothing = await call(port, "POST", f"{base}/transaction", {"operations": []})
    assert error(failed) == (500, "ERR_STATE_TRANSACTION")
    assert after_failure == [b'"old"', b"", b""]  # the upsert of b was rolled back
    assert done.status == 204
    assert after == [b"", b'"new"']
    assert error(unknown) == (400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    assert nothing.status == 204


@pytest.mark.parametrize("store", STORES)
async def test_query_pages_through_matching_values(tmp_path: Path, store: str) -> None:
    async with stores_sidecar(tmp_path) as port:
        people = [
            {"key": f"p{i}", "value": {"city": "Oslo" if i % 2 else "Rome", "n": i}}
            for i in range(7)
        ]
        await call(port, "POST", f"/v1.0/state/{store}", people)
        target = f"/v1.0-alpha1/state/{store}/query"
        query: dict[str, object] = {
            "filter": {"EQ": {"city": "Oslo"}},
            "sort": [{"key": "n", "order": "DESC"}],
            "page": {"limit": 2},
        }
        pages: list[dict[str, object]] = []
        while True:
            reply = await call(port, "POST", target, query)
            assert reply.status == 200, reply.body
            page = json.loads(reply.body)
            pages.append(page)
            if "token" not in page:
                break
            query["page"] = {"limit": 2, "token": page["token"]}
        nobody = await call(port, "PUT", target, {"filter": {"EQ": {"city": "Lima"}}})
        bad = await call(port, "POST", target, {"filter": {"LIKE": {"city": "O%"}}})
    results = [r for page in pages for r in page["results"]]  # type: ignore[attr-defined]
    assert [r["key"] for r in results] == ["p5", "p3", "p1"]  # keys without the app's prefix
    assert [len(page["results"]) for page in pages] == [2, 1]  # type: ignore[arg-type]
    assert results[0]["data"] == {"city": "Oslo", "n": 5}
    assert results[0]["etag"]
    assert (nobody.status, nobody.body) == (204, b"")
    assert error(bad) == (400, "ERR_MALFORMED_REQUEST")


# --- errors ------------------------------------------------------------------------------------


async def test_every_state_route_reports_dapr_errors(tmp_path: Path) -> None:
    async with stores_sidecar(tmp_path) as port:
        unknown = [
            await call(port, "POST", "/v1.0/state/nope", [{"key": "k", "value": 1}]),
            await call(port, "GET", "/v1.0/state/nope/k"),
            await call(port, "DELETE", "/v1.0/state/nope/k"),
            await call(port, "POST", "/v1.0/state/nope/bulk", {"keys": ["k"]}),
            await call(port, "POST", "/v1.0/state/nope/transaction", {"operations": []}),
            await call(port, "POST", "/v1.0-alpha1/state/nope/query", {}),
        ]
        bad_json = await call(port, "POST", "/v1.0/state/sqlstore", b"[{not json")
        not_array = await call(port, "POST", "/v1.0/state/sqlstore", {"key": "k"})
        no_key = await call(port, "POST", "/v1.0/state/sqlstore", [{"value": 1}])
        bad_etag = await call(port, "POST", "/v1.0/state/sqlstore", [{"key": "k", "etag": 7}])
        illegal = [
            await call(port, "POST", "/v1.0/state/sqlstore", [{"key": "a||b", "value": 1}]),
            await call(port, "GET", "/v1.0/state/sqlstore/a||b"),
            await call(port, "DELETE", "/v1.0/state/sqlstore/a%7C%7Cb"),
        ]
        too_big = await call(port, "POST", "/v1.0/state/sqlstore", b"[" + b" " * (4 << 20) + b"]")
        wrong_method = await call(port, "GET", "/v1.0/state/sqlstore")
    assert [error(r) for r in unknown] == [(400, "ERR_STATE_STORE_NOT_FOUND")] * 6
    assert json.loads(unknown[0].body)["message"] == "state store nope is not found"
    assert error(bad_json) == (400, "ERR_MALFORMED_REQUEST")
    assert "failed deserializing HTTP body" in json.loads(bad_json.body)["message"]
    assert error(not_array) == (400, "ERR_MALFORMED_REQUEST")
    assert error(no_key) == (400, "ERR_MALFORMED_REQUEST")
    assert json.loads(no_key.body)["message"] == '"key" is a required field'
    assert error(bad_etag) == (400, "ERR_MALFORMED_REQUEST")
    assert [error(r) for r in illegal] == [(400, "ERR_MALFORMED_REQUEST")] * 3
    assert error(too_big) == (413, "ERR_BODY_READ")
    assert wrong_method.status == 405


# --- keys, the default store, metadata, start-up --------------------------------------------------


async def test_key_prefixes_keep_apps_apart_in_one_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"

    def flags(app: str) -> tuple[str, str]:
        return resources(
            tmp_path / app,
            component("sqlstore", "state.sqlite", connectionString=str(db)),
            component("byname", "state.sqlite", connectionString=str(db), keyPrefix="name"),
            component("custom", "state.sqlite", connectionString=str(db), keyPrefix="Team"),
        )

    async with (
        sidecar("orders", None, tmp_path, *flags("orders")) as a,
        sidecar("billing", None, tmp_path, *flags("billing")) as b,
    ):
        pa, pb = a.port("dapr-http"), b.port("dapr-http")
        await call(pa, "POST", "/v1.0/state/sqlstore", [{"key": "k", "value": "orders"}])
        await call(pb, "POST", "/v1.0/state/sqlstore", [{"key": "k", "value": "billing"}])
        await call(pa, "POST", "/v1.0/state/byname", [{"key": "k", "value": "shared"}])
        await call(pa, "POST", "/v1.0/state/custom", [{"key": "k", "value": "team"}])
        mine = (await call(pa, "GET", "/v1.0/state/sqlstore/k")).body
        theirs = (await call(pb, "GET", "/v1.0/state/sqlstore/k")).body
        shared = (await call(pb, "GET", "/v1.0/state/byname/k")).body
        bulk = json.loads((await call(pb, "POST", "/v1.0/state/custom/bulk", {"keys": ["k"]})).body)
    assert (mine, theirs, shared) == (b'"orders"', b'"billing"', b'"shared"')
    assert bulk == [{"key": "k", "data": "team", "etag": bulk[0]["etag"]}]
    with sqlite3.connect(db) as conn:
        keys = sorted(row[0] for row in conn.execute("SELECT key FROM state"))
    assert keys == ["billing||k", "byname||k", "orders||k", "team||k"]  # Dapr lower-cases it


async def test_the_embedded_sqlite_store_serves_without_components(tmp_path: Path) -> None:
    async with sidecar("orders", None, tmp_path) as running:
        port = running.port("dapr-http")
        saved = await call(port, "POST", "/v1.0/state/statestore", [{"key": "k", "value": 1}])
        got = await call(port, "GET", "/v1.0/state/statestore/k")
        metadata = json.loads((await call(port, "GET", "/v1.0/metadata")).body)
    assert (saved.status, got.body) == (204, b"1")
    assert (tmp_path / "state.db").is_file()
    assert metadata["components"] == [
        {
            "name": "statestore",
            "type": "state.sqlite",
            "version": "v1",
            "capabilities": ["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API", "ACTOR"],
        },
        {  # the embedded broker, likewise there without a Component
            "name": "pubsub",
            "type": "pubsub.sqlite",
            "version": "v1",
            "capabilities": ["MESSAGE_TTL"],
        },
    ]


async def test_metadata_lists_state_stores_with_capabilities(tmp_path: Path) -> None:
    flags = resources(
        tmp_path / "resources",
        component("memstore", "state.in-memory", actorStateStore="true"),
        component("sqlstore", "state.sqlite", connectionString=str(tmp_path / "s.db")),
    )
    async with sidecar("orders", None, tmp_path, *flags) as running:
        metadata = json.loads((await call(running.port("dapr-http"), "GET", "/v1.0/metadata")).body)
    everything = ["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"]
    stores = [c for c in metadata["components"] if c["type"].startswith("state.")]
    assert stores == [
        {"name": "memstore", "type": "state.in-memory", "version": "v1",
         "capabilities": [*everything, "ACTOR"]},
        {"name": "sqlstore", "type": "state.sqlite", "version": "v1", "capabilities": everything},
    ]  # fmt: skip


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def startup_failure(tmp_path: Path, *flags: str) -> str:
    """The reason a sidecar with `flags` refused to start."""
    # Building refuses a bad set of Components; a store failing to start comes out of the
    # server's nurseries, in a group.
    with pytest.raises((ExceptionGroup, ValueError)) as caught:
        async with sidecar("orders", None, tmp_path, *flags):
            pass
    wanted = (StateStoreInitError, ValueError)
    found = [str(leaf) for leaf in _leaves(caught.value) if isinstance(leaf, wanted)]
    assert found, caught.value
    del caught
    gc.collect()  # a listener socket left open would warn now (warnings are errors)
    return found[0]


async def test_start_up_stops_on_a_bad_state_component(tmp_path: Path) -> None:
    unknown = await startup_failure(
        tmp_path, *resources(tmp_path / "a", component("cache", "state.nosuchdb"))
    )
    bad_prefix = await startup_failure(
        tmp_path,
        *resources(tmp_path / "b", component("odd", "state.in-memory", keyPrefix="a||b")),
    )
    two_actor_stores = await startup_failure(
        tmp_path,
        *resources(
            tmp_path / "c",
            component("one", "state.in-memory", actorStateStore="true"),
            component("two", "state.in-memory", actorStateStore="true"),
        ),
    )
    assert unknown.startswith("state store cache (state.nosuchdb): ")
    assert "state.nosuchdb" in unknown.partition(": ")[2]
    assert bad_prefix.startswith("state store odd (state.in-memory): ")
    assert "actorStateStore" in two_actor_stores
    assert "one, two" in two_actor_stores


async def test_ignore_errors_leaves_the_failing_store_out(tmp_path: Path) -> None:
    broken = component("broken", "state.nosuchdb").replace(
        "  version: v1\n", "  version: v1\n  ignoreErrors: true\n"
    )
    flags = resources(tmp_path / "resources", broken, component("memstore", "state.in-memory"))
    async with sidecar("orders", None, tmp_path, *flags) as running:
        port = running.port("dapr-http")
        missing = await call(port, "GET", "/v1.0/state/broken/k")
        works = await call(port, "POST", "/v1.0/state/memstore", [{"key": "k", "value": 1}])
    assert error(missing) == (400, "ERR_STATE_STORE_NOT_FOUND")
    assert works.status == 204


# --- telemetry ---------------------------------------------------------------------------------


@asynccontextmanager
async def traced_sidecar(tmp_path: Path, spans: Spans) -> AsyncIterator[Running]:
    tracing = tmp_path / "tracing.yaml"
    # An exporter makes the Configuration trace; `spans` stands in for the one it names.
    tracing.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: t}\n"
        "spec:\n  tracing:\n    samplingRate: '1'\n"
        "    zipkin: {endpointAddress: 'http://127.0.0.1:9/api/v2/spans'}\n"
    )
    argv = sidecar_args("orders", None, tmp_path, *two_stores(tmp_path), "--config", str(tracing))
    app = build(generated(argv), telemetry=spans.telemetry)
    shutdown, stopped = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(serve, app, shutdown)
        try:
            yield Running(bound, app, shutdown, stopped)
        finally:
            shutdown.set()


async def test_store_calls_are_client_spans_and_dapr_metrics(tmp_path: Path) -> None:
    spans = Spans()
    async with traced_sidecar(tmp_path, spans) as running:
        port = running.port("dapr-http")
        await call(port, "POST", "/v1.0/state/sqlstore", [{"key": "k", "value": 1}])
        await call(port, "GET", "/v1.0/state/memstore/k")
        await call(port, "POST", "/v1.0/state/sqlstore", [{"key": "k", "value": 2, "etag": "x"}])
        finished = await spans.wait_for(6)
        assert running.app.sidecar is not None
        metrics = running.app.sidecar.metrics.render()
    clients = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    servers = {s.context.span_id: s for s in finished if s.kind == trace.SpanKind.SERVER}
    assert [s.name for s in clients] == ["set sqlstore", "get memstore", "set sqlstore"]
    for span in clients:
        assert span.parent is not None
        assert span.parent.span_id in servers
    attributes = [dict(s.attributes or {}) for s in clients]
    assert attributes[0]["db.system.name"] == "sqlite"
    assert attributes[0]["db.operation.name"] == "set"
    assert attributes[0]["db.namespace"] == "sqlstore"
    assert attributes[1]["db.system.name"] == "in-memory"
    assert attributes[2]["error.type"] == "ETagMismatch"
    assert clients[2].status.status_code == trace.StatusCode.ERROR
    labels = 'app_id="orders",component="sqlstore",namespace="default",operation="set"'
    assert f'dapr_component_state_count{{{labels},success="true"}} 1' in metrics
    assert f'dapr_component_state_count{{{labels},success="false"}} 1' in metrics
    assert "dapr_component_state_latencies_bucket{" in metrics
