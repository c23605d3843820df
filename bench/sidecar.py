"""Sidecar cost: app → sidecar → sidecar → app (mutual TLS, tracing at 1 %) against app → app.

Usage: .venv/bin/python bench/sidecar.py [--seconds 10]
Needs nginx and wrk (`make bench-tools`). The "app" is nginx answering 200 (CPU 0, with the load
generator); both sidecars run on CPU 1 (they share one core: a pessimistic layout for two hops),
as does the reference: one nginx reverse proxy hop with one worker (upstream keep-alive).

Measured, in this order (so the RSS after load has seen every test):
- idle RSS of each sidecar, just after the first request went through both;
- one request at a time (wrk -c1, back to back: no queueing, the per-hop cost): p50/p90/p99 of
  the direct call and of the call through both sidecars (`/v1.0/invoke/app/method/hello`);
- 500 and 1,000 req/s evenly spaced (wrk + bench/paced.lua): the same percentiles, with Dapr's
  published added latency (+1.40 ms at p90, +2.10 ms at p99) beside them for reference;
- capacity, closed loop (wrk -c16): req/s through the sidecar pair, through the nginx hop, and
  to the app directly (the generator's core is the limit there);
- RSS of each sidecar after the load (VmRSS; VmHWM, the high-water mark, for reference).

The issue's targets, printed as `TARGET ...` lines: capacity >= 0.04x the nginx hop's; one at a
time, added p50 <= 1.0 ms and added p99 <= 2.1 ms; each sidecar's idle RSS <= 60 MB and
RSS after the load <= 100 MB.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from toolkit import paced, pinned, port, port_free, rss_mb, stop, target, wrk

ROOT = Path(__file__).resolve().parent.parent
APP, SINK, HOP = port(18090), port(19412), port(18091)
CALLER_HTTP, CALLEE_HTTP = port(3600), port(3601)
BODY = "hello from backend"
RATES = (500, 1000)  # evenly spaced, for reference
PACED_CONNECTIONS = 8  # more than requests in flight at 1,000/s through two hops
GOAL_CAPACITY_VS_HOP = 0.04
GOAL_ADDED_P50_MS, GOAL_ADDED_P99_MS = 1.0, 2.1
GOAL_IDLE_MB, GOAL_LOADED_MB = 60.0, 100.0
DAPR_P90_MS, DAPR_P99_MS = 1.40, 2.10  # Dapr's published added latency, for reference


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


def nginx_conf(work: Path) -> tuple[str, str]:
    """The app and Zipkin sink (CPU 0), and the reference hop (CPU 1): two nginx configs."""

    def head(name: str) -> str:
        return (
            f"worker_processes 1; daemon off; pid {work}/{name}.pid; error_log {work}/nginx.err;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; client_body_temp_path {work}; keepalive_requests 100000000;\n"
            "  client_max_body_size 64m; client_body_buffer_size 1m;\n"
        )

    app = head("app") + (
        f'  server {{ listen 127.0.0.1:{APP}; location / {{ return 200 "{BODY}\\n"; }} }}\n'
        f"  server {{ listen 127.0.0.1:{SINK}; location / {{ return 202; }} }} }}\n"
    )
    hop = head("hop") + (
        f"  upstream app {{ server 127.0.0.1:{APP}; keepalive 64; }}\n"
        f"  server {{ listen 127.0.0.1:{HOP}; location / {{ proxy_pass http://app;\n"
        '    proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n'
    )
    return app, hop


def fmt(found: dict[str, float]) -> str:
    return "/".join(f"{found[p]:.2f}" for p in ("p50", "p90", "p99"))


def flagged(*results: dict[str, float]) -> bool:
    return any(r["bad"] or any(math.isnan(r[p]) for p in ("p50", "p99")) for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per test (default 10)")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run `make bench-tools`", file=sys.stderr)
            return 2
    busy = [p for p in (APP, SINK, HOP, CALLER_HTTP, CALLEE_HTTP) if not port_free(p)]
    if busy:
        print(
            f"ports already in use: {busy}; refusing to measure a foreign server", file=sys.stderr
        )
        return 1
    work = Path(tempfile.mkdtemp(prefix="meshwire-sidecar-bench."))
    app_conf, hop_conf = nginx_conf(work)
    (work / "app.conf").write_text(app_conf)
    (work / "hop.conf").write_text(hop_conf)
    (work / "config.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: bench}\nspec:\n"
        "  tracing:\n    samplingRate: '0.01'\n"
        f"    zipkin: {{endpointAddress: 'http://127.0.0.1:{SINK}/api/v2/spans'}}\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    log = (work / "sidecars.log").open("ab")
    seconds = args.seconds
    try:
        for cpu, conf in ((0, "app.conf"), (1, "hop.conf")):
            nginx = ["nginx", "-e", f"{work}/nginx.err", "-p", str(work), "-c", str(work / conf)]
            procs.append(subprocess.Popen([*pinned(cpu), *nginx], start_new_session=True))
        common = ["--data-dir", str(work / "data"), "--config", str(work / "config.yaml")]
        common += ["--no-admin", "--dapr-grpc-port", "0", "--log-level", "warning"]
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
        hop = f"http://127.0.0.1:{HOP}/"
        through = f"http://127.0.0.1:{CALLER_HTTP}/v1.0/invoke/app/method/hello"
        if not (wait_for(direct, 200) and wait_for(hop, 200) and wait_for(through, 200)):
            print(f"nginx or the sidecars did not come up; see {work}/", file=sys.stderr)
            return 1
        idle = (rss_mb(caller.pid), rss_mb(callee.pid))
        wrk(through, 2, 16)  # warm-up: connections, pools, first handshakes
        one = (wrk(direct, seconds, 1), wrk(through, seconds, 1))
        rates = []
        for rate in RATES:
            d = paced(direct, rate, seconds, PACED_CONNECTIONS)
            rates.append((rate, d, paced(through, rate, seconds, PACED_CONNECTIONS)))
        capacity = {"pair": wrk(through, seconds), "hop": wrk(hop, seconds)}
        capacity["direct"] = wrk(direct, seconds)
        loaded = (rss_mb(caller.pid), rss_mb(callee.pid))
        peak = (rss_mb(caller.pid, "VmHWM"), rss_mb(callee.pid, "VmHWM"))
        died = [
            name for name, p in (("caller", caller), ("callee", callee)) if p.poll() is not None
        ]
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()
    print(f"\n## Sidecars — {seconds} s per test, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(
        f"   sidecars pinned together on CPU 1: {bool(pinned(1))} (the nginx hop too); "
        "mTLS between them; tracing 1 % to a Zipkin sink\n"
    )
    print(
        "| load | direct p50/p90/p99 ms | via 2 sidecars p50/p90/p99 ms | added p50/p90/p99 ms "
        "| got req/s | errors |"
    )
    print("|---|---|---|---|---|---|")
    rows = [("1 at a time (wrk -c1)", 0, *one)]
    rows += [(f"{rate}/s evenly spaced", rate, d, s) for rate, d, s in rates]
    for name, rate, d, s in rows:
        added = "/".join(f"{s[p] - d[p]:+.2f}" for p in ("p50", "p90", "p99"))
        got = f"{s['rps']:,.0f}"
        if rate and (s["rps"] < 0.95 * rate or s["late"] > 0.01 * s["rps"] * seconds):
            got += f", {s['late']:.0f} late: rate NOT held, includes queueing"
        print(f"| {name} | {fmt(d)} | {fmt(s)} | {added} | {got} | {d['bad'] + s['bad']:.0f} |")
    print(
        f"\n(Dapr publishes +{DAPR_P90_MS:.2f} ms at p90 and +{DAPR_P99_MS:.2f} ms at p99 added.)"
    )
    print("\n| capacity, closed loop (wrk -t1 -c16) | req/s | errors |\n|---|---|---|")
    labels = {
        "pair": "through both sidecars",
        "hop": "through one nginx hop (1 worker)",
        "direct": "app directly (generator-bound)",
    }
    for name, label in labels.items():
        print(f"| {label} | {capacity[name]['rps']:,.0f} | {capacity[name]['bad']:.0f} |")
    print(
        f"\nRSS, caller / callee sidecar: idle {idle[0]:.1f} / {idle[1]:.1f} MB, after the load "
        f"{loaded[0]:.1f} / {loaded[1]:.1f} MB (high-water mark {peak[0]:.1f} / {peak[1]:.1f} MB)"
    )
    if died:
        print(f"  ! sidecar(s) exited during the run: {', '.join(died)}; see {work}/sidecars.log")
    print()
    pair, ref = capacity["pair"], capacity["hop"]
    if pair["bad"] or ref["bad"] or not ref["rps"] or died:
        why = "errors" if not died else "a sidecar exited"
        target("sidecar capacity vs nginx hop", f"no clean figure ({why})", ">= 0.04x", False)
    else:
        ratio = pair["rps"] / ref["rps"]
        value = f"{ratio:.3f}x ({pair['rps']:,.0f} vs {ref['rps']:,.0f} req/s)"
        want = f">= {GOAL_CAPACITY_VS_HOP}x"
        target("sidecar capacity vs nginx hop", value, want, ratio >= GOAL_CAPACITY_VS_HOP)
    d, s = one
    for p, goal in (("p50", GOAL_ADDED_P50_MS), ("p99", GOAL_ADDED_P99_MS)):
        name = f"sidecar added {p}, 1 at a time"
        if flagged(d, s) or died:
            target(name, "no clean figure (errors)", f"<= {goal} ms", False)
        else:
            extra = s[p] - d[p]
            value = f"{extra:+.2f} ms ({s[p]:.2f} vs {d[p]:.2f} ms)"
            target(name, value, f"<= {goal} ms", extra <= goal)
    memory = (
        ("sidecar idle RSS", idle, GOAL_IDLE_MB),
        ("sidecar RSS after load", loaded, GOAL_LOADED_MB),
    )
    for name, values, goal in memory:
        worst = max(values)  # the heavier sidecar; NaN (not measured) never passes
        value = f"{worst:.1f} MB (caller {values[0]:.1f}, callee {values[1]:.1f})"
        ok = not any(math.isnan(v) for v in values) and worst <= goal
        target(name, value, f"<= {goal:.0f} MB", ok)
    if not died:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
