"""Dapr's state gRPC API with the official Python SDK against an in-process sidecar."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import trio
from dapr.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

from tests.integration.harness import Running
from tests.integration.sidecars import sidecar
from tests.integration.test_state_api import (
    component,
    resources,
    startup_failure,
)

T = TypeVar("T")
DEADLINE = 20
FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Runs `work(client)` with a DaprClient for a sidecar in a worker thread (the SDK reads its
    HTTP port, for its health wait, from the environment)."""
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", str(DEADLINE))

    async def run(running: Running, work: Callable[[DaprClient], T]) -> T:
        monkeypatch.setenv("DAPR_HTTP_PORT", str(running.port("dapr-http")))

        def in_thread() -> T:
            with DaprClient(address=f"127.0.0.1:{running.port('dapr-grpc')}") as client:
                return work(client)

        with trio.fail_after(DEADLINE):
            return await trio.to_thread.run_sync(in_thread)

    return run


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call should have failed")


def flags(tmp_path: Path) -> tuple[str, str]:
    return resources(
        tmp_path / "resources",
        component("memstore", "state.in-memory"),
        component("sqlstore", "state.sqlite", connectionString=str(tmp_path / "s.db")),
    )


@pytest.mark.parametrize("store", ["memstore", "sqlstore"])
async def test_sdk_saves_reads_and_deletes_with_etags(
    tmp_path: Path, sdk: Callable[..., Any], store: str
) -> None:
    def work(d: DaprClient) -> dict[str, object]:
        seen: dict[str, object] = {}
        d.save_state(store, "raw", b"\x00\xffbytes as-is", state_metadata={"contentType": "x/y"})
        d.save_state(store, "k", '{"n": 1}')
        first = d.get_state(store, "k")
        seen["raw"] = d.get_state(store, "raw").data
        seen["first"] = (first.data, first.etag)
        seen["stale"] = failure(lambda: d.save_state(store, "k", "2", etag="not-it"))
        seen["taken"] = failure(lambda: d.save_state(store, "k", "3", options=FIRST_WRITE))
        d.save_state(store, "k", "4", etag=first.etag)
        second = d.get_state(store, "k")
        seen["second"] = (second.data, second.etag)
        seen["bad_delete"] = failure(lambda: d.delete_state(store, "k", etag=first.etag))
        d.delete_state(store, "k", etag=second.etag, options=FIRST_WRITE)
        seen["gone"] = d.get_state(store, "k").data
        seen["unknown"] = failure(lambda: d.get_state("nope", "k"))
        seen["illegal"] = failure(lambda: d.save_state(store, "a||b", "1"))
        return seen

    async with sidecar("orders", None, tmp_path, *flags(tmp_path)) as running:
        seen = await sdk(running, work)
    assert seen["raw"] == b"\x00\xffbytes as-is"  # gRPC values are stored as the bytes sent
    data, etag = seen["first"]
    assert data == b'{"n": 1}'
    assert etag
    assert seen["stale"][0] == grpc.StatusCode.ABORTED
    assert seen["taken"][0] == grpc.StatusCode.ABORTED
    assert seen["second"][0] == b"4"
    assert seen["second"][1] != etag
    assert seen["bad_delete"][0] == grpc.StatusCode.ABORTED
    assert seen["gone"] == b""
    assert seen["unknown"] == (grpc.StatusCode.INVALID_ARGUMENT, "state store nope is not found")
    assert seen["illegal"][0] == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.filterwarnings("ignore:The State Store Query API is an Alpha:UserWarning")
async def test_sdk_bulk_transactions_and_query(tmp_path: Path, sdk: Callable[..., Any]) -> None:
    def work(d: DaprClient) -> dict[str, object]:
        seen: dict[str, object] = {}
        people = [
            StateItem(f"p{i}", json.dumps({"city": "Oslo" if i % 2 else "Rome", "n": i}))
            for i in range(6)
        ]
        d.save_bulk_state("sqlstore", people)
        bulk = d.get_bulk_state("sqlstore", ["p1", "missing", "p2"], parallelism=2)
        seen["bulk"] = [(i.key, i.data, bool(i.etag)) for i in bulk.items]
        d.execute_state_transaction(
            "sqlstore",
            [
                TransactionalStateOperation("p0", operation_type=TransactionOperationType.delete),
                TransactionalStateOperation("t1", '"new"'),
            ],
        )
        seen["after"] = [d.get_state("sqlstore", k).data for k in ("p0", "t1")]
        seen["failed"] = failure(
            lambda: d.execute_state_transaction(
                "sqlstore",
                [
                    TransactionalStateOperation("t2", '"x"'),
                    TransactionalStateOperation("t1", '"y"', etag="not-it"),
                ],
            )
        )
        seen["rolled_back"] = d.get_state("sqlstore", "t2").data
        query = {"filter": {"EQ": {"city": "Oslo"}}, "sort": [{"key": "n"}], "page": {"limit": 2}}
        page = d.query_state("sqlstore", json.dumps(query))
        query["page"] = {"limit": 2, "token": page.token}
        rest = d.query_state("sqlstore", json.dumps(query))
        seen["pages"] = [[r.key for r in page.results], [r.key for r in rest.results], rest.token]
        seen["first_value"] = page.results[0].json()
        seen["bad_query"] = failure(lambda: d.query_state("sqlstore", "{not json"))
        components = d.get_metadata().registered_components
        seen["components"] = {
            c.name: list(c.capabilities) for c in components if c.type.startswith("state.")
        }
        return seen

    async with sidecar("orders", None, tmp_path, *flags(tmp_path)) as running:
        seen = await sdk(running, work)
    assert seen["bulk"] == [("p1", b'{"city": "Oslo", "n": 1}', True), ("missing", b"", False),
                            ("p2", b'{"city": "Rome", "n": 2}', True)]  # fmt: skip
    assert seen["after"] == [b"", b'"new"']
    assert seen["failed"][0] == grpc.StatusCode.INTERNAL
    assert "error while executing state transaction" in seen["failed"][1]
    assert seen["rolled_back"] == b""
    assert seen["pages"] == [["p1", "p3"], ["p5"], ""]
    assert seen["first_value"] == {"city": "Oslo", "n": 1}
    assert seen["bad_query"][0] == grpc.StatusCode.INVALID_ARGUMENT
    everything = ["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"]
    assert seen["components"] == {"memstore": everything, "sqlstore": everything}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_store_that_cannot_start_stops_the_sidecar(tmp_path: Path) -> None:
    redis = component(
        "cache", "state.redis", redisHost=f"127.0.0.1:{closed_port()}", redisMaxRetries="0"
    )
    reason = await startup_failure(tmp_path, *resources(tmp_path / "resources", redis))
    assert reason.startswith("state store cache (state.redis): ")
    assert "127.0.0.1:" in reason  # the backend's own reason follows
