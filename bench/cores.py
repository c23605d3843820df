"""CPU per request with `meshwire run --concurrency 1` and `--concurrency 2`: does it stay flat?

Usage: .venv/bin/python bench/cores.py [--seconds 5] [--rounds 3] [--meshwire PATH]
Needs nginx and wrk (`make bench-tools`). `--concurrency N` runs N worker processes sharing the
listener (SO_REUSEPORT); until `meshwire run --help` offers it, this prints a SKIP line.

Nothing is pinned here: the point is how meshwire uses both cores. meshwire runs the default
config of bench/run.sh (quick mode's listener, the tracing filter at 1 % to a Zipkin sink, the
admin listener) in front of a one-worker nginx backend; wrk -t1 -c32 loads it closed loop.
Per test: req/s, and the CPU time (user + system) of meshwire's whole process tree (the process
started and all its descendants, from /proc/PID/stat, before and after) divided by the requests
served. N = 1 and N = 2 alternate for --rounds rounds; medians are reported. On a 2-core box
with the backend and wrk on the same cores, req/s cannot double; the CPU per request should not
grow: the issue's target is N=2's CPU per request within 10 % of N=1's (a `TARGET ...` line).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from toolkit import CLK_TCK, cpu_ticks, port, port_free, stop, target, tree, wrk

ROOT = Path(__file__).resolve().parent.parent
BACKEND, SINK, LISTEN, ADMIN = port(18085), port(18086), port(19040), port(19904)
URL = f"http://127.0.0.1:{LISTEN}/"
BODY = "hello from backend"
WORKERS = (1, 2)
GOAL_PCT = 10.0
NAME = "cores CPU/req N=2 vs N=1"
GOAL = f"within {GOAL_PCT:g} %"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200 and r.read().decode() == BODY + "\n")
    except OSError:
        return False


def has_concurrency(meshwire: str) -> bool:
    found = subprocess.run([meshwire, "run", "--help"], capture_output=True, text=True, check=False)
    return "--concurrency" in found.stdout


def config() -> str:
    return (
        "telemetry:\n"
        "  service_name: meshwire-bench\n"
        f"  zipkin: {{endpoint: 'http://127.0.0.1:{SINK}/api/v2/spans'}}\n"
        f"admin: {{address: '127.0.0.1:{ADMIN}'}}\n"
        "listeners:\n"
        "  - name: ingress\n"
        f"    address: 127.0.0.1:{LISTEN}\n"
        "    filters:\n"
        "      - {type: tracing, sampling_rate: 0.01}\n"
        "      - {type: router}\n"
        "    routes:\n"
        "      - {match: {prefix: /}, cluster: upstream}\n"
        "clusters:\n"
        f"  - {{name: upstream, endpoints: ['127.0.0.1:{BACKEND}']}}\n"
    )


class Result:
    def __init__(self) -> None:
        self.rps: list[float] = []
        self.cpu_us: list[float] = []
        self.processes: list[int] = []
        self.split: list[str] = []  # each process's share of the tree's CPU, per test
        self.errors: list[str] = []


def measure(meshwire: str, n: int, cfg: Path, work: Path, seconds: int, result: Result) -> None:
    log = (work / "meshwire.log").open("ab")
    argv = [meshwire, "run", "-c", str(cfg), "--concurrency", str(n), "--log-level", "warning"]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not answers(URL):
            if proc.poll() is not None or time.monotonic() > deadline:
                result.errors.append(f"N={n} did not start (see {work}/meshwire.log)")
                return
            time.sleep(0.1)
        time.sleep(1)  # let every worker come up
        wrk(URL, 1, 32, cpu=None)  # warm-up: connections, pools
        pids = tree(proc.pid)
        before = {p: cpu_ticks([p]) for p in pids}
        found = wrk(URL, seconds, 32, cpu=None)
        after = {p: cpu_ticks([p]) for p in pids}
        if found["bad"]:
            result.errors.append(f"N={n}: wrk {found['bad']:.0f} bad responses or errors")
        if proc.poll() is not None or tree(proc.pid) != pids:
            result.errors.append(f"N={n}: the process tree changed during the test")
        used = {p: after[p] - before[p] for p in pids}
        total = sum(used.values())
        result.rps.append(found["rps"])
        result.processes.append(len(pids))
        if found["requests"] and total:
            result.cpu_us.append(total / CLK_TCK / found["requests"] * 1e6)
            result.split.append("/".join(f"{used[p] / total * 100:.0f}" for p in pids))
    finally:
        stop(proc)
        log.close()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per test (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of N=1, N=2 (default 3)")
    parser.add_argument("--meshwire", default=str(ROOT / ".venv/bin/meshwire"), help="executable")
    args = parser.parse_args()
    if not has_concurrency(args.meshwire):
        print("\n## CPU per request with --concurrency 1 and 2\n")
        print("SKIP: --concurrency not available (`meshwire run --help` does not offer it)")
        target(NAME, "not measured (--concurrency not available)", GOAL, None)
        return 0
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run `make bench-tools`", file=sys.stderr)
            return 2
    busy = [p for p in (BACKEND, SINK, LISTEN, ADMIN) if not port_free(p)]
    if busy:
        print(
            f"ports already in use: {busy}; refusing to measure a foreign server", file=sys.stderr
        )
        return 1
    work = Path(tempfile.mkdtemp(prefix="meshwire-cores-bench."))
    (work / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;\n"
        "events { worker_connections 4096; }\n"
        f"http {{ access_log off; client_body_temp_path {work}; keepalive_requests 100000000;\n"
        "  client_max_body_size 64m; client_body_buffer_size 1m;\n"
        f'  server {{ listen 127.0.0.1:{BACKEND}; location / {{ return 200 "{BODY}\\n"; }} }}\n'
        f"  server {{ listen 127.0.0.1:{SINK}; location / {{ return 202; }} }} }}\n"
    )
    cfg = work / "meshwire.yaml"
    cfg.write_text(config())
    nginx = ["nginx", "-e", f"{work}/nginx.err", "-p", str(work), "-c", str(work / "nginx.conf")]
    backend = subprocess.Popen(nginx, start_new_session=True)
    results = {n: Result() for n in WORKERS}
    try:
        deadline = time.monotonic() + 10
        while not answers(f"http://127.0.0.1:{BACKEND}/") and time.monotonic() < deadline:
            time.sleep(0.05)
        for round_ in range(args.rounds):
            for n in WORKERS:
                print(f"[cores-bench] round {round_ + 1}/{args.rounds}: N={n}", file=sys.stderr)
                measure(args.meshwire, n, cfg, work, args.seconds, results[n])
    finally:
        stop(backend)
    print(f"\n## CPU per request with --concurrency 1 and 2 — {args.rounds} rounds x "
          f"{args.seconds} s, medians, {time.strftime('%Y-%m-%d %H:%M:%S')}")  # fmt: skip
    print("   unpinned; meshwire, the nginx backend and wrk -t1 -c32 share the machine's cores\n")
    print("| N | req/s (min-max) | CPU µs/req (min-max) | processes | CPU split % per process |")
    print("|---|---|---|---|---|")
    for n, r in results.items():
        rps = f"{median(r.rps):,.0f} ({min(r.rps):,.0f}-{max(r.rps):,.0f})" if r.rps else "-"
        cpu = (
            f"{median(r.cpu_us):.0f} ({min(r.cpu_us):.0f}-{max(r.cpu_us):.0f})" if r.cpu_us else "-"
        )
        procs = "/".join(str(p) for p in sorted(set(r.processes))) or "-"
        print(f"| {n} | {rps} | {cpu} | {procs} | {', '.join(r.split) or '-'} |")
    errors = sorted({e for r in results.values() for e in r.errors})
    for e in errors:
        print(f"  ! {e}")
    print()
    one, two = median(results[1].cpu_us), median(results[2].cpu_us)
    if errors or not (one > 0 and two > 0):
        target(NAME, "no clean figure (" + "; ".join(errors or ["not measured"]) + ")", GOAL, False)
    else:
        change = (two / one - 1) * 100
        value = f"{change:+.1f} % ({two:.0f} vs {one:.0f} µs/req)"
        target(NAME, value, GOAL, abs(change) <= GOAL_PCT)
    if not errors:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
