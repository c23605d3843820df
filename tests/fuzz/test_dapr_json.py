"""Fuzz the Dapr JSON APIs of a real sidecar process (state, query, bulk, transactions, publish,
metadata): any body gets a 2xx or Dapr's JSON error, never a 500 or a traceback, and the
process's memory stays bounded."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.test_process import free_port, meshwire_cmd, rss_peak_mb

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0
RSS_GROWTH_MB = 150  # what a fuzz run may add to the sidecar's peak memory
RESOURCES = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec: {type: state.in-memory, version: v1}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: pubsub}
spec: {type: pubsub.in-memory, version: v1}
"""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
FIELDS = ["key", "value", "etag", "metadata", "options", "ttlInSeconds", "contentType",
          "operation", "request", "keys", "parallelism", "filter", "sort", "page", "AND",
          "OR", "EQ", "IN", "limit", "token", "concurrency", "entryId", "event"]  # fmt: skip
dapr_shaped = st.recursive(
    json_values,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)
    ),
    max_leaves=20,
)


def encode(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


bodies = (
    dapr_shaped.map(encode)
    | st.binary(max_size=64)
    | st.sampled_from([10, 2_000, 100_000]).map(lambda depth: b"[" * depth + b"]" * depth)
    | st.sampled_from([b"NaN", b"Infinity", b"1e400", b'"\\ud800"']).map(
        lambda odd: b'[{"key": "k", "value": %s}]' % odd
    )
    | st.just(b'{"filter": ' + b'{"AND": [' * 5_000 + b"{}" + b"]}" * 5_000 + b"}")
)
keys = st.text(max_size=10).map(lambda k: quote(k.encode("utf-8", "surrogatepass"), safe=""))
calls = st.sampled_from(
    [
        ("POST", "/v1.0/state/statestore"),
        ("POST", "/v1.0/state/statestore/bulk"),
        ("POST", "/v1.0/state/statestore/transaction"),
        ("POST", "/v1.0-alpha1/state/statestore/query"),
        ("POST", "/v1.0/publish/pubsub/orders"),
        ("POST", "/v1.0-alpha1/publish/bulk/pubsub/orders"),
        ("GET", "/v1.0/state/statestore/{key}"),
        ("GET", "/v1.0/state/statestore/k"),
        ("DELETE", "/v1.0/state/statestore/{key}"),
        ("PUT", "/v1.0/metadata/{key}"),
    ]
)


class Sidecar:
    """One sidecar process with in-memory state and pub/sub, and a keep-alive client to it."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "resources").mkdir()
        (tmp / "resources" / "components.yaml").write_text(RESOURCES)
        self.port = free_port()
        argv = meshwire_cmd(
            "run", "--app-id", "fuzz", "--dapr-http-port", str(self.port),
            "--dapr-grpc-port", str(free_port()), "--metrics-port", str(free_port()),
            "--data-dir", str(tmp / "data"), "--resources-path", str(tmp / "resources"),
        )  # fmt: skip
        self.stderr = (tmp / "stderr.log").open("w+")
        self.process = subprocess.Popen(argv, cwd=ROOT, stderr=self.stderr, text=True)
        self.client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                if self.call("GET", "/v1.0/healthz/outbound", b"")[0] == 204:
                    return
            except OSError:
                assert self.process.poll() is None, self.log()
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.05)  # polling for the listener; the deadline bounds it

    def call(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            self.client.request(method, path, body=body,
                                headers={"content-type": "application/json"})  # fmt: skip
            response = self.client.getresponse()
            answer = response.read()
            return response.status, answer
        except (OSError, http.client.HTTPException):
            self.client.close()
            raise

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=START_DEADLINE)
        self.stderr.close()


def refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    running = Sidecar(tmp_path_factory.mktemp("dapr-fuzz"))
    start_mb = rss_peak_mb(running.process.pid)
    try:
        yield running
        assert running.process.poll() is None, running.log()
        assert rss_peak_mb(running.process.pid) - start_mb < RSS_GROWTH_MB
        assert "Traceback" not in running.log(), running.log()
    finally:
        running.stop()


@given(calls, keys, bodies)
def test_dapr_apis_answer_any_body_without_a_500(
    sidecar: Sidecar, call: tuple[str, str], key: str, body: bytes
) -> None:
    method, path = call
    status, answer = sidecar.call(method, path.format(key=key or "k"), body)
    assert status != 500, (method, path, key, body[:200], answer[:300])
    if method == "GET" and status == 200:
        json.loads(answer, parse_constant=refuse)  # what was stored reads back as valid JSON
    if status >= 400:
        error = json.loads(answer)
        assert error.get("errorCode"), answer
        assert "bytearray(" not in error.get("message", "")
