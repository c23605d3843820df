"""Memory: each way of running meshwire's RSS when idle and after load, as one Markdown table.

Usage: .venv/bin/python bench/rss.py [--seconds 20] [--rows sidecar,grpc,redis,envoy]
Needs nginx and hey (`make bench-tools`); the `redis` row needs a Redis on 127.0.0.1:6379.

Rows (meshwire pinned to CPU 1, nginx and hey to CPU 0, one row at a time):
- `sidecar`: `meshwire run --app-id app` with an nginx app, tracing to Zipkin at 1 % (the
  sidecar bench's setup), `--dapr-grpc-port 0`, no admin port;
- `grpc`: the same with the gRPC API on a fixed port (the default `--dapr-grpc-port` is 50001,
  which may be taken on a shared machine) and the admin/metrics port on;
- `redis`: `sidecar` plus a state.redis and a pubsub.redis Component;
- `envoy`: quick mode, `meshwire run --listen … --upstream http://nginx`.

Columns: **idle MB** is VmRSS once it answers a first request through it (the sidecar: its
healthz, then one `/v1.0/invoke/app/method/x`), **1st gRPC call MB** (the `grpc` row) VmRSS
after one GetMetadata on the gRPC API, **after load MB** VmRSS after `hey -z SECONDS -c 16`
through it, and **peak MB** VmHWM then.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from toolkit import parse_hey, pinned, stop

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("sidecar", "grpc", "redis", "envoy")
REDIS = "127.0.0.1:6379"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except OSError:
        return 0


def wait_for(url: str, want: int, proc: subprocess.Popen[bytes], deadline_s: float = 30) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        if status(url) == want:
            return True
        time.sleep(0.1)
    return False


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def component(name: str, kind: str) -> str:
    return (
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
        f"spec:\n  type: {kind}\n  version: v1\n"
        f"  metadata:\n    - {{name: redisHost, value: '{REDIS}'}}\n"
    )


def grpc_call(port: int) -> None:
    """One GetMetadata on the Dapr gRPC API (grpcio, in this process: the bench's, not
    meshwire's, which speaks gRPC over its own HTTP/2)."""
    import grpc
    from dapr.proto.runtime.v1 import dapr_pb2_grpc
    from dapr.proto.runtime.v1.metadata_pb2 import GetMetadataRequest

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        dapr_pb2_grpc.DaprStub(channel).GetMetadata(GetMetadataRequest(), timeout=30)


def command(row: str, work: Path, app: int, sink: int, port: int) -> tuple[list[str], str, int]:
    """The meshwire argv of a row, the URL the load goes to and the gRPC API's port (0: none
    to call)."""
    meshwire = [*pinned(1), str(ROOT / ".venv/bin/meshwire"), "run", "--log-level", "warning"]
    if row == "envoy":
        admin = ["--admin", f"127.0.0.1:{free_port()}"]
        argv = ["--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{app}", *admin]
        return [*meshwire, *argv], f"http://127.0.0.1:{port}/x", 0
    config = work / "config.yaml"
    config.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: bench}\nspec:\n"
        "  tracing:\n    samplingRate: '0.01'\n"
        f"    zipkin: {{endpointAddress: 'http://127.0.0.1:{sink}/api/v2/spans'}}\n"
    )
    argv = ["--app-id", "app", "--app-port", str(app), "--dapr-http-port", str(port)]
    argv += ["--data-dir", str(work / "data"), "--config", str(config)]
    argv += ["--dapr-internal-grpc-port", "0"]
    grpc_port = 0
    if row == "grpc":
        grpc_port = free_port()
        argv += ["--dapr-grpc-port", str(grpc_port), "--metrics-port", str(free_port())]
    else:
        argv += ["--dapr-grpc-port", "0", "--no-admin"]
    if row == "redis":
        resources = work / "resources"
        resources.mkdir(exist_ok=True)
        (resources / "state.yaml").write_text(component("statestore", "state.redis"))
        (resources / "pubsub.yaml").write_text(component("pubsub", "pubsub.redis"))
        argv += ["--resources-path", str(resources)]
    return [*meshwire, *argv], f"http://127.0.0.1:{port}/v1.0/invoke/app/method/x", grpc_port


def measure(row: str, work: Path, app: int, sink: int, seconds: int) -> str:
    port = free_port()
    argv, url, grpc_port = command(row, work, app, sink, port)
    log = (work / f"{row}.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        ready = url if row == "envoy" else f"http://127.0.0.1:{port}/v1.0/healthz"
        if not (wait_for(ready, 200 if row == "envoy" else 204, proc) and status(url) == 200):
            return f"| {row} | did not start (see {work}/{row}.log) | | | | |"
        time.sleep(1)  # start-up's background tasks (certificates, name resolution) settle
        idle, _ = memory_mb(proc.pid)
        called = "-"
        if grpc_port:
            grpc_call(grpc_port)
            called = f"{memory_mb(proc.pid)[0]:.1f}"
        out = subprocess.run(
            [*pinned(0), "hey", "-z", f"{seconds}s", "-c", "16", url],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found = parse_hey(out)
        after, peak = memory_mb(proc.pid)
        return (
            f"| {row} | {idle:.1f} | {called} | {after:.1f} | {peak:.1f} "
            f"| {found['rps']:.0f} req/s, {found['bad']:.0f} bad |"
        )
    finally:
        stop(proc)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rows", default=",".join(ROWS))
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {sorted(unknown)}")
    for tool in ("nginx", "hey"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run `make bench-tools`", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="meshwire-rss-bench."))
    app, sink = free_port(), free_port()
    (work / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;\n"
        "events { worker_connections 4096; }\n"
        f"http {{ access_log off; client_body_temp_path {work}; keepalive_requests 100000000;\n"
        f'  server {{ listen 127.0.0.1:{app}; location / {{ return 200 "hello\\n"; }} }}\n'
        f"  server {{ listen 127.0.0.1:{sink}; location / {{ return 202; }} }} }}\n"
    )
    nginx = subprocess.Popen(
        [
            *pinned(0),
            "nginx",
            "-e",
            f"{work}/nginx.err",
            "-p",
            str(work),
            "-c",
            f"{work}/nginx.conf",
        ],
        start_new_session=True,
    )
    lines = []
    try:
        for row in rows:
            lines.append(measure(row, work, app, sink, args.seconds))
    finally:
        stop(nginx)
    print(f"\n## RSS — hey -z {args.seconds}s -c 16, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"   meshwire pinned to CPU 1: {bool(pinned(1))}; python {sys.version.split()[0]}\n")
    print("| row | idle MB | 1st gRPC call MB | after load MB | peak MB | load |")
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))
    if not os.environ.get("KEEP_WORKDIR"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
