"""Bad input to the Dapr APIs of an in-process sidecar: Dapr's 4xx errors, never a 500 or a
traceback (issue 12, finding 7). Stores and brokers are the sidecar's own (memory, SQLite)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import grpc
import pytest
import trio
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from dapr.proto.runtime.v1.metadata_pb2 import SetMetadataRequest
from dapr.proto.runtime.v1.state_pb2 import (
    GetStateRequest,
    SaveStateRequest,
)

from filters.state.store import StateError
from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import Reply, backend
from tests.integration.sidecars import sidecar
from tests.integration.test_state_api import (
    STORES,
    call,
    component,
    resources,
    stores_sidecar,
    two_stores,
)

DEEP = b"[" * 100_000 + b"]" * 100_000
MAX_VALUE_BYTES = 4096  # a metadata attribute's value
MAX_ATTRIBUTES = 64  # metadata attributes set by callers
DEADLINE = 20


def dapr_error(reply: Reply) -> tuple[int, dict[str, str]]:
    return reply.status, json.loads(reply.body)


def malformed(message: str) -> tuple[int, dict[str, str]]:
    return 400, {"errorCode": "ERR_MALFORMED_REQUEST", "message": message}


@pytest.fixture
def api_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="meshwire")
    return caplog


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records at WARNING or above carrying a traceback (what flooded the log)."""
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]


# --- keys that are not Unicode text -----------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_a_key_that_is_not_unicode_text_is_a_400(
    tmp_path: Path, store: str, api_log: pytest.LogCaptureFixture
) -> None:
    base = f"/v1.0/state/{store}"
    not_utf8 = malformed(r"invalid path parameter: \xed\xa0\x80 is not valid UTF-8 (byte 0)")
    lone = malformed(r"failed deserializing HTTP body: lone surrogate in string \ud800")
    async with stores_sidecar(tmp_path) as port:
        get = await call(port, "GET", f"{base}/%ED%A0%80")
        delete = await call(port, "DELETE", f"{base}/%ED%A0%80")
        save = await call(port, "POST", base, b'[{"key":"\\ud800","value":1}]')
        value = await call(port, "POST", base, b'[{"key":"k","value":"a\\udc00"}]')
        bulk = await call(port, "POST", f"{base}/bulk", b'{"keys":["\\ud800"]}')
        upsert = b'{"operations":[{"operation":"upsert","request":{"key":"\\ud800","value":1}}]}'
        transaction = await call(port, "POST", f"{base}/transaction", upsert)
        pair = await call(port, "POST", base, b'[{"key":"\\ud83d\\ude00","value":1}]')
        emoji = await call(port, "GET", f"{base}/%F0%9F%98%80")
    assert dapr_error(get) == not_utf8
    assert dapr_error(delete) == not_utf8
    assert dapr_error(save) == lone
    assert dapr_error(value) == malformed(
        r"failed deserializing HTTP body: lone surrogate in string a\udc00"
    )
    assert dapr_error(bulk) == lone
    assert dapr_error(transaction) == lone
    # A surrogate pair is one character (U+1F600), a key like any other.
    assert (pair.status, emoji.status, emoji.body) == (204, 200, b"1")
    assert tracebacks(api_log) == []


# --- JSON nested too deep, NaN, Infinity ------------------------------------------------------


async def test_json_nested_too_deep_is_a_400_without_a_traceback(
    tmp_path: Path, api_log: pytest.LogCaptureFixture
) -> None:
    too_deep = "arrays and objects nested more than 128 deep"
    async with stores_sidecar(tmp_path) as port:
        save = await call(port, "POST", "/v1.0/state/memstore", DEEP)
        bulk = await call(port, "POST", "/v1.0/state/sqlstore/bulk", DEEP)
        transaction = await call(port, "POST", "/v1.0/state/memstore/transaction", DEEP)
        query = await call(port, "POST", "/v1.0-alpha1/state/sqlstore/query", DEEP)
        bulk_publish = await call(port, "POST", "/v1.0-alpha1/publish/bulk/pubsub/orders", DEEP)
        # The body's own array and object count: 2 + 127 levels is one too many.
        value = b'[{"key":"k","value":' + b"[" * 127 + b"]" * 127 + b"}]"
        deep_value = await call(port, "POST", "/v1.0/state/memstore", value)
        fine = b'[{"key":"k","value":' + b"[" * 126 + b"]" * 126 + b"}]"
        deepest = await call(port, "POST", "/v1.0/state/memstore", fine)
    for reply in (save, bulk, transaction, deep_value):
        assert dapr_error(reply) == malformed(f"failed deserializing HTTP body: {too_deep}")
    assert dapr_error(query) == malformed(
        f"failed deserializing HTTP body: the query is not valid JSON: {too_deep}"
    )
    assert dapr_error(bulk_publish) == (
        400,
        {
            "errorCode": "ERR_PUBSUB_EVENTS_SER",
            "message": f"error when unmarshaling the request body: {too_deep}",
        },
    )
    assert deepest.status == 204
    assert tracebacks(api_log) == []


@pytest.mark.parametrize("store", STORES)
async def test_non_finite_numbers_are_refused_not_stored(tmp_path: Path, store: str) -> None:
    base = f"/v1.0/state/{store}"
    async with stores_sidecar(tmp_path) as port:
        nan = await call(port, "POST", base, b'[{"key":"n","value":NaN}]')
        infinity = await call(port, "POST", base, b'[{"key":"n","value":{"x":-Infinity}}]')
        huge = await call(port, "POST", base, b'[{"key":"n","value":1e400}]')
        upsert = b'{"operations":[{"operation":"upsert","request":{"key":"n","value":Infinity}}]}'
        transaction = await call(port, "POST", f"{base}/transaction", upsert)
        stored = await call(port, "GET", f"{base}/n")
    assert dapr_error(nan) == malformed("failed deserializing HTTP body: NaN is not a JSON number")
    assert dapr_error(infinity) == malformed(
        "failed deserializing HTTP body: -Infinity is not a JSON number"
    )
    assert dapr_error(huge) == malformed(
        "failed deserializing HTTP body: number 1e400 is out of range"
    )
    assert dapr_error(transaction) == malformed(
        "failed deserializing HTTP body: Infinity is not a JSON number"
    )
    assert (stored.status, stored.body) == (204, b"")


async def test_values_saved_over_grpc_come_back_over_http_as_valid_json(tmp_path: Path) -> None:
    """gRPC saves bytes as they are: NaN or a 100k-deep array must not break (or be pasted
    raw into) the JSON answers of the HTTP bulk get and query."""
    async with sidecar("orders", None, tmp_path, *two_stores(tmp_path)) as running:
        items = [
            common_pb2.StateItem(key="nan", value=b"NaN"),
            common_pb2.StateItem(key="deep", value=DEEP),
        ]
        request = SaveStateRequest(store_name="memstore", states=items)
        await trio.to_thread.run_sync(grpc_call, running.port("dapr-grpc"), "SaveState", request)
        port = running.port("dapr-http")
        bulk = await call(port, "POST", "/v1.0/state/memstore/bulk", {"keys": ["nan", "deep"]})
    assert bulk.status == 200, bulk.body
    entries = json.loads(bulk.body)
    assert [(e["key"], e["data"]) for e in entries] == [
        ("nan", "NaN"),
        ("deep", DEEP.decode()),
    ]


# --- state queries ----------------------------------------------------------------------------


def nested_and(depth: int) -> dict[str, object]:
    filter_: dict[str, object] = {"EQ": {"a": 1}}
    for _ in range(depth):
        filter_ = {"AND": [filter_]}
    return {"filter": filter_}


@pytest.mark.parametrize("store", STORES)
async def test_a_query_nests_and_or_at_most_32_deep(tmp_path: Path, store: str) -> None:
    target = f"/v1.0-alpha1/state/{store}/query"
    async with stores_sidecar(tmp_path) as port:
        await call(port, "POST", f"/v1.0/state/{store}", [{"key": "k", "value": {"a": 1}}])
        deepest = await call(port, "POST", target, nested_and(32))
        too_deep = await call(port, "POST", target, nested_and(33))
    assert deepest.status == 200, deepest.body
    assert [r["key"] for r in json.loads(deepest.body)["results"]] == ["k"]
    assert dapr_error(too_deep) == malformed(
        "failed deserializing HTTP body: filter: AND/OR nested more than 32 deep"
    )


@pytest.mark.parametrize("store", STORES)
async def test_a_page_past_32_bits_is_a_400(tmp_path: Path, store: str) -> None:
    """SQLite cannot bind a LIMIT or OFFSET past 64 bits (an OverflowError, not a store
    error): the query refuses both before any store sees them."""
    target = f"/v1.0-alpha1/state/{store}/query"
    async with stores_sidecar(tmp_path) as port:
        limit = await call(port, "POST", target, b'{"page":{"limit":100000000000000000000000}}')
        token = await call(port, "POST", target, b'{"page":{"token":"100000000000000000000000"}}')
        largest = await call(port, "POST", target, {"page": {"limit": 2**31 - 1}})
    assert dapr_error(limit) == malformed(
        "failed deserializing HTTP body: page.limit: expected an integer from 0 to 2147483647, "
        "got 100000000000000000000000"
    )
    assert dapr_error(token) == malformed(
        "failed deserializing HTTP body: page.token: 100000000000000000000000 is not a token "
        "this store issued"
    )
    assert largest.status == 204


# --- pub/sub ----------------------------------------------------------------------------------


async def test_publish_takes_bad_input_as_daprd_does(tmp_path: Path) -> None:
    """With a broker that cannot expire messages itself, the envelope carries `expiration`:
    a TTL past any timestamp overflowed building it. A body too deep for JSON is text, as any
    other non-JSON body; as the app's own CloudEvent it is daprd's ERR_PUBSUB_CLOUD_EVENTS_SER.
    Names are UTF-8 text, as state keys are."""
    flags = resources(tmp_path / "resources", component("pubsub", "pubsub.in-memory"))
    json_type = [("content-type", "application/json")]
    events = [("content-type", "application/cloudevents+json")]
    async with sidecar("orders", None, tmp_path, *flags) as running:
        port = running.port("dapr-http")
        base = "/v1.0/publish/pubsub"
        ttl = "ttlInSeconds=99999999999999999999"
        long_ttl = await call(port, "POST", f"{base}/t?metadata.ttlInSeconds=9223372036854775807")
        past_64_bits = await call(port, "POST", f"{base}/t?metadata.{ttl}", b"x")
        deep = await call(port, "POST", f"{base}/t", DEEP, json_type)
        deep_event = await call(port, "POST", f"{base}/t", DEEP, events)
        topic = await call(port, "POST", f"{base}/%ED%A0%80", b"x")
        name = await call(port, "POST", "/v1.0/publish/%FF/t", b"x")
    assert (long_ttl.status, deep.status) == (204, 204)
    assert dapr_error(past_64_bits) == (
        400,
        {
            "errorCode": "ERR_PUBSUB_REQUEST_METADATA",
            "message": "failed deserializing metadata: ttlInSeconds must be an integer, "
            "got 99999999999999999999",
        },
    )
    status, body = dapr_error(deep_event)
    assert (status, body["errorCode"]) == (500, "ERR_PUBSUB_CLOUD_EVENTS_SER")
    assert body["message"].startswith(
        "error when publishing to topic t in pubsub pubsub: cannot create cloudevent: "
        "body is not JSON: "
    )
    assert dapr_error(topic) == malformed(
        r"invalid pubsub name or topic: \xed\xa0\x80 is not valid UTF-8 (byte 0)"
    )
    assert dapr_error(name) == malformed(
        r"invalid pubsub name or topic: \xff is not valid UTF-8 (byte 0)"
    )


# --- ttlInSeconds -----------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_ttl_in_seconds_is_checked_when_saved(tmp_path: Path, store: str) -> None:
    base = f"/v1.0/state/{store}"

    def item(ttl: str) -> list[dict[str, object]]:
        return [{"key": "t", "value": 1, "metadata": {"ttlInSeconds": ttl}}]

    async with stores_sidecar(tmp_path) as port:
        huge = await call(port, "POST", base, item("9223372036854775807"))
        after_huge = await call(port, "GET", f"{base}/t")
        in_query = await call(port, "POST", f"{base}?metadata.ttlInSeconds=2147483648", item(""))
        arabic = await call(port, "POST", base, item("\u0661"))
        upsert = {"operation": "upsert", "request": item("99999999999999")[0]}
        transaction = await call(port, "POST", f"{base}/transaction", {"operations": [upsert]})
        largest = await call(port, "POST", base, item("2147483647"))
        kept = await call(port, "GET", f"{base}/t")
        forever = await call(port, "POST", base, item("-1"))
        again = await call(port, "GET", f"{base}/t")
    limit = "ttlInSeconds must be from -1 to 2147483647"
    assert dapr_error(huge) == malformed(f"{limit}: 9223372036854775807")
    assert (after_huge.status, after_huge.body) == (204, b"")
    assert dapr_error(in_query) == malformed(f"{limit}: 2147483648")
    assert dapr_error(arabic) == malformed("ttlInSeconds must be an integer: \u0661")
    assert dapr_error(transaction) == malformed(f"{limit}: 99999999999999")
    assert (largest.status, kept.status, kept.body) == (204, 200, b"1")
    assert kept.header(b"metadata.ttlexpiretime") is not None
    assert (forever.status, again.status) == (204, 200)
    assert again.header(b"metadata.ttlexpiretime") is None


async def test_a_stored_expiry_past_year_9999_still_reads(tmp_path: Path) -> None:
    """A row an older meshwire saved with a TTL no timestamp can show: GET answers it."""
    database = tmp_path / "shared.db"
    async with stores_sidecar(tmp_path) as port:
        await call(port, "POST", "/v1.0/state/sqlstore", [{"key": "t", "value": 1}])
        with sqlite3.connect(database) as conn:
            conn.execute("UPDATE state SET expiration_time = ?", (9.3e18,))
        reply = await call(port, "GET", "/v1.0/state/sqlstore/t")
        bulk = await call(port, "POST", "/v1.0/state/sqlstore/bulk", {"keys": ["t"]})
    assert (reply.status, reply.body) == (200, b"1")
    assert reply.header(b"metadata.ttlexpiretime") == b"9999-12-31T23:59:59Z"
    assert json.loads(bulk.body)[0]["metadata"] == {"ttlExpireTime": "9999-12-31T23:59:59Z"}


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_a_failed_transaction_says_why_without_the_stored_key(
    tmp_path: Path, store: str
) -> None:
    """The store's own message named the stored key as a Python repr ('orders||a\\tb')."""
    upsert = {"operation": "upsert", "request": {"key": "a\tb", "value": 1, "etag": "9"}}
    async with stores_sidecar(tmp_path) as port:
        reply = await call(
            port, "POST", f"/v1.0/state/{store}/transaction", {"operations": [upsert]}
        )
    assert dapr_error(reply) == (
        500,
        {
            "errorCode": "ERR_STATE_TRANSACTION",
            "message": "error while executing state transaction: possible etag mismatch",
        },
    )


# --- content types ----------------------------------------------------------------------------


async def test_a_content_type_must_be_a_header_value(tmp_path: Path) -> None:
    base = "/v1.0/state/memstore"
    async with stores_sidecar(tmp_path) as port:
        crlf = await call(
            port, "POST", base, [{"key": "c", "value": "x", "metadata": {"contentType": "a\r\nb"}}]
        )
        wide = {"contentType": "text/plain; name=\u4e2d"}
        saved = await call(port, "POST", base, [{"key": "c", "value": "x", "metadata": wide}])
        reply = await call(port, "GET", f"{base}/c")
    assert dapr_error(crlf) == malformed(r"contentType a\x0d\x0ab is not a header value")
    assert (saved.status, reply.status, reply.body) == (204, 200, b"x")
    assert reply.header(b"content-type") == "text/plain; name=\u4e2d".encode()


# --- metadata attributes ----------------------------------------------------------------------


async def test_metadata_attributes_are_capped(tmp_path: Path) -> None:
    async with sidecar("orders", None, tmp_path) as running:
        port = running.port("dapr-http")
        largest = await call(port, "PUT", "/v1.0/metadata/big", b"x" * MAX_VALUE_BYTES)
        too_big = await call(port, "PUT", "/v1.0/metadata/big", b"x" * (MAX_VALUE_BYTES + 1))
        long_key = await call(port, "PUT", "/v1.0/metadata/" + "k" * 257, b"v")
        not_utf8 = await call(port, "PUT", "/v1.0/metadata/%FF", b"v")
        for i in range(MAX_ATTRIBUTES - 1):
            assert (await call(port, "PUT", f"/v1.0/metadata/a{i}", b"v")).status == 204
        one_more = await call(port, "PUT", "/v1.0/metadata/one-more", b"v")
        replaced = await call(port, "PUT", "/v1.0/metadata/a0", b"new")
        over_grpc = await trio.to_thread.run_sync(
            grpc_status,
            running.port("dapr-grpc"),
            "SetMetadata",
            SetMetadataRequest(key="another", value="v"),
        )
        listed = json.loads((await call(port, "GET", "/v1.0/metadata")).body)["extended"]
    assert largest.status == 204
    assert dapr_error(too_big) == (
        413,
        {"errorCode": "ERR_BODY_READ", "message": f"body larger than {MAX_VALUE_BYTES} bytes"},
    )
    assert dapr_error(long_key) == malformed("metadata key longer than 256 bytes")
    assert dapr_error(not_utf8) == malformed(r"metadata key: \xff is not valid UTF-8 (byte 0)")
    assert dapr_error(one_more) == malformed(
        f"too many metadata attributes (at most {MAX_ATTRIBUTES})"
    )
    assert replaced.status == 204
    assert over_grpc == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"too many metadata attributes (at most {MAX_ATTRIBUTES})",
    )
    assert len(listed) == MAX_ATTRIBUTES + 1  # and daprRuntimeVersion
    assert (listed["big"], listed["a0"]) == ("x" * MAX_VALUE_BYTES, "new")


# --- invocation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("a%2Fb", "a/b"),
        ("a%0D%0Ab", r"a\x0d\x0ab"),
        ("a%00b", r"a\x00b"),
        ("a%20b", "a b"),
        ("%ED%A0%80", "%ED%A0%80"),
        ("..", ".."),
    ],
)
async def test_an_app_id_that_cannot_be_one_is_a_400(
    tmp_path: Path, target: str, shown: str
) -> None:
    async with sidecar("orders", None, tmp_path) as running:
        reply = await call(running.port("dapr-http"), "GET", f"/v1.0/invoke/{target}/method/x")
    assert dapr_error(reply) == (
        400,
        {
            "errorCode": "ERR_DIRECT_INVOKE",
            "message": f"failed to invoke, id: {shown}, err: invalid app id",
        },
    )


async def test_an_app_id_header_that_cannot_be_one_is_a_400(tmp_path: Path) -> None:
    async with sidecar("orders", None, tmp_path) as running:
        port = running.port("dapr-http")
        slash = await call(port, "GET", "/x", headers=[("dapr-app-id", "a/b")])
        latin = await exchange(port, b"GET /x HTTP/1.1\r\nhost: x\r\ndapr-app-id: caf\xe9\r\n\r\n")
    message = "failed to invoke, id: {}, err: invalid app id"
    assert dapr_error(slash) == (
        400,
        {"errorCode": "ERR_DIRECT_INVOKE", "message": message.format("a/b")},
    )
    body = (
        b'{"errorCode": "ERR_DIRECT_INVOKE", '
        b'"message": "failed to invoke, id: caf\\\\xe9, err: invalid app id"}\n'
    )
    assert latin == (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


async def exchange(port: int, request: bytes) -> bytes:
    """`request` as raw bytes; the response's bytes, up to the end of its body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(DEADLINE):
            while True:
                data += await stream.receive_some(65536)
                head, sep, body = data.partition(b"\r\n\r\n")
                if not sep:
                    continue
                lengths = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if len(body) >= lengths[0]:
                    return data


class Echo:
    """An app answering with the headers it received."""

    async def __call__(self, request: Request) -> Response:
        if request.path == b"/dapr/subscribe":
            return Response.text(404, "no subscriptions")
        while await request.body.read():
            pass
        seen = [[k.decode(), v.decode()] for k, v in request.headers]
        return Response(
            200, [(b"content-type", b"application/json")], BytesBody(json.dumps(seen).encode())
        )


async def test_hop_by_hop_headers_never_reach_the_app(tmp_path: Path) -> None:
    hop = [
        ("connection", "x-secret, keep-alive"),
        ("x-secret", "caller's only"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("x-kept", "yes"),
    ]
    async with (
        backend(Echo()) as orders_port,
        backend(Echo()) as billing_port,
        sidecar("orders", orders_port, tmp_path) as orders,
        sidecar("billing", billing_port, tmp_path),
    ):
        port = orders.port("dapr-http")
        local = await call(port, "GET", "/v1.0/invoke/orders/method/x", headers=hop)
        remote = await call(port, "GET", "/v1.0/invoke/billing/method/x", headers=hop)
    for reply in (local, remote):
        assert reply.status == 200, reply.body
        names = {name for name, _ in json.loads(reply.body)}
        assert "x-kept" in names
        assert names.isdisjoint({"connection", "x-secret", "keep-alive", "proxy-authorization"})


# --- what no handler expected -----------------------------------------------------------------


async def test_an_unexpected_exception_is_daprs_500_and_one_log_line(
    tmp_path: Path, api_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sidecar("orders", None, tmp_path, *two_stores(tmp_path)) as running:
        runtime = running.app.sidecar
        assert runtime is not None
        store = runtime.state.get("memstore")
        assert store is not None

        async def broken(key: str) -> None:
            raise ZeroDivisionError("a bug some input found")

        monkeypatch.setattr(store.store, "get", broken)
        api_log.clear()
        replies = [await call(running.port("dapr-http"), "GET", "/v1.0/state/memstore/k")]
        grpc_reply = await trio.to_thread.run_sync(
            grpc_status,
            running.port("dapr-grpc"),
            "GetState",
            GetStateRequest(store_name="memstore", key="k"),
        )
    assert [dapr_error(r) for r in replies] == [
        (500, {"errorCode": "ERROR", "message": "internal error"})
    ]
    assert grpc_reply == (grpc.StatusCode.INTERNAL, "internal error")
    errors = [r for r in api_log.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.exc_info) for r in errors] == [("meshwire.dapr", None)] * 2
    first = errors[0].getMessage()
    assert first.startswith(
        "dapr api: GET /v1.0/state/memstore/k failed: ZeroDivisionError: a bug some input found"
    )
    assert "test_dapr_bad_input.py" in first  # where it was raised
    assert (
        errors[1]
        .getMessage()
        .startswith("dapr api: dapr.proto.runtime.v1.Dapr/GetState failed: ZeroDivisionError")
    )
    assert "\n" not in first + errors[1].getMessage()


async def test_a_store_failure_is_not_unexpected(tmp_path: Path) -> None:
    """Typed failures keep their Dapr code (this is what the catch-all must not swallow)."""
    async with sidecar("orders", None, tmp_path, *two_stores(tmp_path)) as running:
        runtime = running.app.sidecar
        assert runtime is not None
        store = runtime.state.get("memstore")
        assert store is not None

        async def failing(key: str) -> None:
            raise StateError("disk on fire")

        store.store.get = failing  # type: ignore[method-assign]
        reply = await call(running.port("dapr-http"), "GET", "/v1.0/state/memstore/k")
    assert dapr_error(reply) == (
        500,
        {
            "errorCode": "ERR_STATE_GET",
            "message": "fail to get k from state store memstore: disk on fire",
        },
    )


# --- gRPC helpers -----------------------------------------------------------------------------


def grpc_call(port: int, method: str, request: object) -> object:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)  # type: ignore[no-untyped-call]
        return getattr(stub, method)(request, timeout=DEADLINE)


def grpc_status(port: int, method: str, request: object) -> tuple[grpc.StatusCode, str]:
    try:
        grpc_call(port, method, request)
    except grpc.RpcError as err:
        return err.code(), err.details()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""
