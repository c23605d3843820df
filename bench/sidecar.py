"""Sidecar latency: app → sidecar → sidecar → app (mutual TLS, tracing at 1 %) against app → app.

Usage: .venv/bin/python bench/sidecar.py [--seconds 10]
Needs nginx and hey (`make bench-tools`). The "app" is nginx answering 200 (CPU 0, with hey);
both sidecars run on CPU 1 (they share one core: a pessimistic layout for two hops).

For each fixed rate (500 and 1,000 req/s, hey -q per worker) it measures p50/p90/p99 of the
direct call and of the call through both sidecars (`/v1.0/invoke/app/method/`), and reports the
added latency next to Dapr's published figures (+1.40 ms at p90, +2.10 ms at p99), and each
sidecar's RSS after the load.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from toolkit import parse_hey, pinned, port_free, rss_mb, stop

ROOT = Path(__file__).resolve().parent.parent
APP, SINK = 18090, 19412
CALLER_HTTP, CALLEE_HTTP = 3600, 3601
BODY = "hello from backend"
RATES = (1, 500, 1000)  # 1: one request at a time (no queueing), as fast as it goes
WORKERS = {1: 1, 500: 10, 1000: 20}  # x 50 req/s each (hey's -q is per worker)
TARGET_P90_MS, TARGET_P99_MS = 1.40, 2.10  # Dapr's published added latency


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status)
    except OSError:
        return 0


def wait_for(url: str, want: int, deadline_s: float = 30) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if status(url) == want:
            return True
        time.sleep(0.1)
    return False


def hey(url: str, rate: int, seconds: int) -> dict[str, float]:
    workers = WORKERS[rate]
    limit = ["-q", str(rate // workers)] if rate > 1 else []  # 1: back to back, unlimited
    out = subprocess.run(
        [*pinned(0), "hey", "-z", f"{seconds}s", "-c", str(workers), *limit, url],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = parse_hey(out)
    found["errors"] = found["bad"]
    for p in ("p50", "p90", "p99"):
        if p not in found:
            print(f"hey gave no {p} for {url}:\n{out}", file=sys.stderr)
            found[p] = float("nan")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    for tool in ("nginx", "hey"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run `make bench-tools`", file=sys.stderr)
            return 2
    busy = [p for p in (APP, SINK, CALLER_HTTP, CALLEE_HTTP) if not port_free(p)]
    if busy:
        print(f"ports already in use: {busy}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="meshwire-sidecar-bench."))
    (work / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;\n"
        "events { worker_connections 4096; }\n"
        f"http {{ access_log off; client_body_temp_path {work}; keepalive_requests 100000000;\n"
        "  client_max_body_size 64m;\n"
        f'  server {{ listen 127.0.0.1:{APP}; location / {{ return 200 "{BODY}\\n"; }} }}\n'
        f"  server {{ listen 127.0.0.1:{SINK}; location / {{ return 202; }} }} }}\n"
    )
    (work / "config.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: bench}\nspec:\n"
        "  tracing:\n    samplingRate: '0.01'\n"
        f"    zipkin: {{endpointAddress: 'http://127.0.0.1:{SINK}/api/v2/spans'}}\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    log = (work / "sidecars.log").open("ab")
    try:
        procs.append(
            subprocess.Popen(
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
        )
        common = [
            "--data-dir",
            str(work / "data"),
            "--config",
            str(work / "config.yaml"),
            "--no-admin",
        ]
        common += ["--dapr-grpc-port", "0", "--log-level", "warning"]
        meshwire = [*pinned(1), str(ROOT / ".venv/bin/meshwire"), "run"]
        callee = subprocess.Popen(
            [*meshwire, "--app-id", "app", "--app-port", str(APP),
             "--dapr-http-port", str(CALLEE_HTTP), *common],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        caller = subprocess.Popen(
            [*meshwire, "--app-id", "caller", "--dapr-http-port", str(CALLER_HTTP), *common],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        procs += [callee, caller]
        direct = f"http://127.0.0.1:{APP}/"
        through = f"http://127.0.0.1:{CALLER_HTTP}/v1.0/invoke/app/method/hello"
        if not (wait_for(direct, 200) and wait_for(through, 200)):
            print(f"sidecars did not come up; see {work}/sidecars.log", file=sys.stderr)
            return 1
        rows = []
        for rate in RATES:
            hey(through, rate, 2)  # warm-up: connections, pools, first handshakes
            rows.append((rate, hey(direct, rate, args.seconds), hey(through, rate, args.seconds)))
        rss = (rss_mb(caller.pid), rss_mb(callee.pid))
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()
    print(f"\n## Sidecar latency — {args.seconds} s per rate, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"   sidecars pinned together on CPU 1: {bool(pinned(1))}; mTLS on; tracing 1 %\n")
    print(
        "| rate | direct p50/p90/p99 ms | via 2 sidecars p50/p90/p99 ms "
        "| added p90 / p99 ms | errors |"
    )
    print("|---|---|---|---|---|")
    for rate, d, s in rows:
        add90, add99 = s["p90"] - d["p90"], s["p99"] - d["p99"]
        load = "1 at a time" if rate == 1 else f"{rate}/s"
        print(
            f"| {load} (got {s['rps']:.0f}/s) | {d['p50']:.2f}/{d['p90']:.2f}/{d['p99']:.2f} "
            f"| {s['p50']:.2f}/{s['p90']:.2f}/{s['p99']:.2f} | {add90:+.2f} / {add99:+.2f} "
            f"| {s['errors']:.0f} |"
        )
    print(f"\nRSS after the load: caller sidecar {rss[0]:.1f} MB, callee sidecar {rss[1]:.1f} MB")
    for rate, d, s in rows[1:]:
        ok = s["p90"] - d["p90"] <= TARGET_P90_MS and s["p99"] - d["p99"] <= TARGET_P99_MS
        print(
            f"target at {rate}/s: added p90 <= {TARGET_P90_MS} ms and p99 <= {TARGET_P99_MS} ms: "
            f"{'met' if ok else 'MISSED'}"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
