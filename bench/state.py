"""State API cost: get and save through a sidecar, per store, against the backend's client alone.

Usage: .venv/bin/python bench/state.py [--seconds 5]
Needs hey, wrk and h2load (`make bench-tools`) and the machine's Redis and PostgreSQL (127.0.0.1,
database test). One meshwire sidecar (pinned to CPU 1) serves four stores: state.in-memory,
state.sqlite, state.redis and state.postgresql; the load generators and this script run on CPU 0.

Per store, over HTTP/1.1: GET one at a time (wrk -c1, back to back; microsecond percentiles);
GET and POST (save one item) at a fixed 1,000 ops/s (hey: 20 workers x 50/s, so arrivals come in
bursts of 20 and p50 includes queueing) and closed-loop maxima (hey, 16 connections).
Over gRPC (the Dapr SDKs' default): Dapr/GetState one at a time from Python with grpcio and the
`dapr` package's generated stubs (what an SDK user's call costs), and with h2load (a C client:
p50 one at a time from its per-request log, and the closed-loop maximum).
Baseline: the store's own Python client reading the same row in a loop (one op at a time).

The added latency is the p50 one at a time minus the client alone's p50. Dapr v1.17 adds
0.28 ms at p50 for a get; the issue's target, per store and per path (HTTP and gRPC), is
<= 0.3 ms, printed as `TARGET ...` lines.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from toolkit import parse_hey, pinned, port, port_free, rss_mb, stop, target, wrk

ROOT = Path(__file__).resolve().parent.parent
HTTP, GRPC = port(3700), port(3701)
TABLE = f"bench_state_{uuid.uuid4().hex[:8]}"
PG = "host=127.0.0.1 user=postgres dbname=test"
TARGET_ADDED_P50_MS = 0.3


def components(directory: Path) -> None:
    stores = {
        "memory": ("state.in-memory", {}),
        "sqlite": ("state.sqlite", {"connectionString": str(directory / "state.db")}),
        "redis": ("state.redis", {"redisHost": "127.0.0.1:6379", "keyPrefix": TABLE}),
        "postgres": ("state.postgresql", {"connectionString": PG, "tableName": TABLE}),
    }
    for name, (kind, metadata) in stores.items():
        items = "".join(f"  - {{name: {k}, value: '{v}'}}\n" for k, v in metadata.items())
        items = f":\n{items}" if items else ": []\n"
        (directory / f"{name}.yaml").write_text(
            f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
            f"spec:\n  type: {kind}\n  version: v1\n  metadata{items}"
        )


def http(method: str, path: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{HTTP}{path}", body, method=method)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return int(reply.status)


def hey(
    path: str, rate: int | None, seconds: int, body: str | None = None, workers: int = 16
) -> dict[str, float]:
    """rate: fixed ops/s (20 workers); None: closed loop with `workers` connections."""
    args = [*pinned(0), "hey", "-z", f"{seconds}s"]
    args += ["-c", "20", "-q", str(rate // 20)] if rate else ["-c", str(workers)]
    if body is not None:
        args += ["-m", "POST", "-T", "application/json", "-d", body]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{HTTP}{path}"], capture_output=True, text=True, check=False
    ).stdout
    return parse_hey(out, ok_codes=("200", "204"))


def grpc_get_body(store: str, key: str) -> bytes:
    """A framed dapr.proto.runtime.v1.Dapr/GetState request, for h2load's -d."""
    from dapr.proto.runtime.v1 import dapr_pb2
    from google.protobuf import message_factory

    method = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods_by_name["GetState"]
    request = message_factory.GetMessageClass(method.input_type)(store_name=store, key=key)
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def h2load_grpc(grpc_port: int, body: Path, one_at_a_time: bool, seconds: int, log: Path) -> float:
    """gRPC GetState with h2load: p50 ms one at a time (from its per-request log), or ops/s."""
    args = [*pinned(0), "h2load", "-d", str(body), "-H", "content-type: application/grpc"]
    args += ["-H", "te: trailers"]
    args += ["-c1", "-m1", f"--log-file={log}"] if one_at_a_time else ["-c4", "-m8"]
    args += ["-D", str(seconds)]
    url = f"http://127.0.0.1:{grpc_port}/dapr.proto.runtime.v1.Dapr/GetState"
    out = subprocess.run([*args, url], capture_output=True, text=True, check=False).stdout
    if one_at_a_time:
        lines = log.read_text().splitlines() if log.exists() else []
        times = [int(line.split()[2]) / 1000 for line in lines if line]
        return statistics.median(times) if times else float("nan")  # microseconds -> ms
    found = re.search(r"finished in .*?, ([\d.]+) req/s", out)
    return float(found.group(1)) if found else 0.0


def timed(op: Callable[[], object], n: int = 3000, seconds: float = 60) -> tuple[float, float]:
    """p50/p99 in ms of `op` run back to back, n times or for `seconds` if that ends first
    (after n/10 unrecorded runs to warm up)."""
    for _ in range(n // 10):
        op()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < n and (len(times) < 100 or time.perf_counter() < deadline):
        start = time.perf_counter()
        op()
        times.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


def grpcio_get(store: str, key: str, seconds: float) -> tuple[float, float]:
    """Dapr/GetState one at a time as the Python SDK makes it: grpcio, the generated stub, a
    plaintext channel to the sidecar's gRPC API port. p50/p99 in ms; NaN if the value is wrong."""
    import grpc
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

    with grpc.insecure_channel(f"127.0.0.1:{GRPC}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = state_pb2.GetStateRequest(store_name=store, key=key)
        try:
            reply = stub.GetState(request, timeout=5)
            if reply.data != b'{"n":1}':
                print(f"gRPC GetState {store}/{key} answered {reply.data!r}", file=sys.stderr)
                return float("nan"), float("nan")
            return timed(lambda: stub.GetState(request, timeout=5), seconds=seconds)
        except grpc.RpcError as error:
            print(f"gRPC GetState {store}/{key} failed: {error}", file=sys.stderr)
            return float("nan"), float("nan")


def direct_clients(directory: Path) -> dict[str, tuple[float, float]]:
    """The backend's own client reading one row, as the stores store it (after the sidecar ran)."""
    import psycopg
    import redis

    key = "bench||k"
    results: dict[str, tuple[float, float]] = {"memory": timed(lambda: {key: b"1"}.get(key))}
    db = sqlite3.connect(directory / "state.db")
    results["sqlite"] = timed(
        lambda: db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    )
    db.close()
    client = redis.Redis(host="127.0.0.1", port=6379)
    redis_key = f"{TABLE}||k"  # the custom keyPrefix the redis component is given
    results["redis"] = timed(lambda: client.hget(redis_key, "data"))
    client.delete(redis_key)
    client.close()
    with psycopg.connect(PG) as conn:
        query = f"SELECT value FROM {TABLE} WHERE key = %s"
        results["postgres"] = timed(lambda: conn.execute(query, (key,)).fetchone())
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.commit()
    return results


STORES = ("memory", "sqlite", "redis", "postgres")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    for tool in ("hey", "wrk", "h2load"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run `make bench-tools`", file=sys.stderr)
            return 2
    busy = [p for p in (HTTP, GRPC) if not port_free(p)]
    if busy:
        print(
            f"ports already in use: {busy}; refusing to measure a foreign server", file=sys.stderr
        )
        return 1
    if pinned(0):  # grpcio and the stores' own clients run here, beside the generators
        os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="meshwire-state-bench."))
    resources = work / "resources"
    resources.mkdir()
    components(resources)
    log = (work / "sidecar.log").open("ab")
    argv = [*pinned(1), str(ROOT / ".venv/bin/meshwire"), "run", "--app-id", "bench"]
    argv += ["--dapr-http-port", str(HTTP), "--dapr-grpc-port", str(GRPC), "--no-admin"]
    argv += ["--data-dir", str(work), "--resources-path", str(resources), "--log-level", "warning"]
    sidecar = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    rows = []
    grpc_rows: dict[str, tuple[tuple[float, float], float, float]] = {}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", "/v1.0/healthz/outbound") == 204:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or sidecar.poll() is not None:
                print(f"the sidecar did not start; see {work}/sidecar.log", file=sys.stderr)
                return 1
            time.sleep(0.1)
        save = '[{"key":"k","value":{"n":1}}]'
        url = f"http://127.0.0.1:{HTTP}"
        for store in STORES:
            http("POST", f"/v1.0/state/{store}", save.encode())
            get_path = f"/v1.0/state/{store}/k"
            hey(get_path, 1000, 2)  # warm-up
            body = work / f"{store}.grpc"
            body.write_bytes(grpc_get_body(store, "k"))
            grpc_rows[store] = (
                grpcio_get(store, "k", args.seconds),
                h2load_grpc(GRPC, body, True, args.seconds, work / f"{store}.log"),
                h2load_grpc(GRPC, body, False, args.seconds, work / f"{store}.log"),
            )
            rows.append(
                (
                    store,
                    wrk(f"{url}{get_path}", args.seconds, connections=1),
                    hey(get_path, 1000, args.seconds),
                    hey(get_path, None, args.seconds),
                    hey(f"/v1.0/state/{store}", 1000, args.seconds, save),
                    hey(f"/v1.0/state/{store}", None, args.seconds, save),
                )
            )
        rss = rss_mb(sidecar.pid)
        died = sidecar.poll() is not None
    finally:
        stop(sidecar)
        log.close()
    direct = direct_clients(resources)
    print(f"\n## State API — {args.seconds} s per test, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"   sidecar pinned to CPU 1: {bool(pinned(1))}; RSS after load {rss:.1f} MB\n")
    print(
        "| store | client alone p50/p99 ms | HTTP get p50/p99 ms, 1 at a time | added p50 ms "
        "| get p50/p99 ms @1000/s (bursts) | get max ops/s | save p50/p99 ms @1000/s (bursts) "
        "| save max ops/s | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for store, get_one, get, get_max, put, put_max in rows:
        d50, d99 = direct[store]
        bad = get["bad"] + get_max["bad"] + get_one["bad"] + put["bad"] + put_max["bad"]
        print(
            f"| {store} | {d50:.3f}/{d99:.3f} | {get_one['p50']:.3f}/{get_one['p99']:.3f} "
            f"| {get_one['p50'] - d50:+.3f} | {get['p50']:.2f}/{get['p99']:.2f} "
            f"| {get_max['rps']:,.0f} | {put['p50']:.2f}/{put['p99']:.2f} | {put_max['rps']:,.0f} "
            f"| {bad:.0f} |"
        )
    print(
        "\n| store | gRPC GetState p50/p99 ms, 1 at a time (grpcio) | added p50 ms "
        "| p50 ms, 1 at a time (h2load) | added p50 ms | max ops/s (h2load -c4 -m8) |"
    )
    print("|---|---|---|---|---|---|")
    for store, ((g50, g99), h50, rate) in grpc_rows.items():
        d50 = direct[store][0]
        print(
            f"| {store} | {g50:.3f}/{g99:.3f} | {g50 - d50:+.3f} | {h50:.3f} | {h50 - d50:+.3f} "
            f"| {rate:,.0f} |"
        )
    if died:
        print(f"  ! the sidecar exited during the run; see {work}/sidecar.log")
    print()
    goal = f"<= {TARGET_ADDED_P50_MS} ms"
    for store, get_one, *_ in rows:
        d50 = direct[store][0]
        name = f"state GET added p50, {store}, HTTP"
        if get_one["bad"] or math.isnan(get_one.get("p50", math.nan)) or died:
            target(name, "no clean figure (errors)", goal, False)
        else:
            added = get_one["p50"] - d50
            value = f"{added:+.3f} ms ({get_one['p50']:.3f} vs {d50:.3f} ms)"
            target(name, value, goal, added <= TARGET_ADDED_P50_MS)
        g50 = grpc_rows[store][0][0]
        name = f"state GET added p50, {store}, gRPC"
        if math.isnan(g50) or died:
            target(name, "no clean figure (wrong value or errors)", goal, False)
        else:
            value = f"{g50 - d50:+.3f} ms ({g50:.3f} vs {d50:.3f} ms)"
            target(name, value, goal, g50 - d50 <= TARGET_ADDED_P50_MS)
    if not died:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
