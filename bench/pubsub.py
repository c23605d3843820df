"""Pub/sub cost: publish throughput through a sidecar and publish→delivery latency, per broker.

Usage: .venv/bin/python bench/pubsub.py [--seconds 5] [--rate 1000] [--brokers a,b]
Needs hey (`make bench-tools`) and the machine's Redis, NATS, RabbitMQ and Mosquitto.
One meshwire sidecar (pinned to CPU 1) serves six pubsub components, one per broker; hey, the
publisher and the subscriber app run on CPU 0.

Per broker: publish throughput, closed loop (hey, 32 connections, a 100-byte JSON event, nobody
subscribed to that topic) — msg/s and p50/p99; and publish→delivery latency at a fixed rate
(a trio publisher spreads `--rate` msg/s evenly over 8 connections; each event carries its send
time, the app subtracts it from its arrival time) — p50/p99 and how many arrived. The issue's
target, printed as `TARGET ...` lines: publish >= 5,000 msg/s on Redis and NATS (JetStream).
The delivery p99 <= 10 ms at 1,000 msg/s is printed as a `goal` line (not one of the issue's
targets).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit import parse_hey, pinned, port, port_free, rss_mb, stop, target

from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, backend
from tests.pubsub.brokers import TEST_TOPIC_PREFIX
from tests.pubsub.cleanup import RABBITMQ_VHOST, ensure_rabbitmq_vhost, purge_test_topics

ROOT = Path(__file__).resolve().parent.parent
HTTP, GRPC = port(3710), port(3711)
RUN = f"{TEST_TOPIC_PREFIX}bench-{uuid.uuid4().hex[:8]}"  # purged when the bench ends
BROKERS: dict[str, tuple[str, dict[str, str]]] = {
    "memory": ("pubsub.in-memory", {}),
    "sqlite": ("pubsub.sqlite", {}),  # connectionString filled in per run
    "redis": ("pubsub.redis", {"redisHost": "127.0.0.1:6379"}),
    "jetstream": ("pubsub.jetstream", {"natsURL": "nats://127.0.0.1:4222"}),
    "rabbitmq": ("pubsub.rabbitmq", {"connectionString": "amqp://guest:guest@127.0.0.1:5672/"}),
    "mqtt": ("pubsub.mqtt3", {"url": "tcp://127.0.0.1:1883"}),
}
RABBITMQ_URL = f"amqp://guest:guest@127.0.0.1:5672/{RABBITMQ_VHOST}"
GOAL_RATE = {"redis": 5000, "jetstream": 5000}
GOAL_P99_MS = 10.0


def components(directory: Path, chosen: list[str]) -> None:
    for name in chosen:
        kind, metadata = BROKERS[name]
        if name == "sqlite":
            metadata = {"connectionString": str(directory / "pubsub.db")}
        items = "".join(f"  - {{name: {k}, value: '{v}'}}\n" for k, v in metadata.items())
        items = f":\n{items}" if items else ": []\n"
        (directory / f"{name}.yaml").write_text(
            f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
            f"spec:\n  type: {kind}\n  version: v1\n  metadata{items}"
        )


class LatencyApp:
    """Subscribes every broker's latency topic; records send→arrival per event."""

    def __init__(self, chosen: list[str]) -> None:
        self.subscriptions = [
            {"pubsubname": b, "topic": f"{RUN}-lat", "route": f"/lat/{b}"} for b in chosen
        ]
        self.latencies: dict[str, list[float]] = {b: [] for b in chosen}

    async def __call__(self, request: Request) -> Response:
        body = bytearray()
        while chunk := await request.body.read():
            body += chunk
        if request.target == b"/dapr/subscribe":
            data = json.dumps(self.subscriptions).encode()
            return Response(200, [(b"content-type", b"application/json")], BytesBody(data))
        arrived = time.time_ns()
        broker = request.target.decode().rsplit("/", 1)[-1]
        sent = json.loads(body)["data"]["ts"]
        self.latencies[broker].append((arrived - sent) / 1e6)
        return Response(200, [])


async def publish_at_rate(broker: str, rate: int, seconds: int) -> int:
    """`rate` msg/s spread evenly over 8 connections for `seconds`; returns how many got 204."""
    connections, ok = 8, 0
    interval = connections / rate
    target = f"/v1.0/publish/{broker}/{RUN}-lat"
    headers = [("content-type", "application/json")]

    async def one(offset: float) -> None:
        nonlocal ok
        async with H1Client.connect(HTTP) as client:
            start = trio.current_time() + offset
            for i in range(int(seconds * rate / connections)):
                await trio.sleep_until(start + i * interval)
                body = json.dumps({"ts": time.time_ns(), "pad": "x" * 40}).encode()
                reply = await client.request("POST", target, headers, body)
                ok += reply.status == 204

    async with trio.open_nursery() as nursery:
        for c in range(connections):
            nursery.start_soon(one, c * interval / connections)
    return ok


def hey_publish(broker: str, seconds: int) -> dict[str, float]:
    body = json.dumps({"ts": 0, "pad": "x" * 80})
    args = [*pinned(0), "hey", "-z", f"{seconds}s", "-c", "32", "-m", "POST"]
    args += ["-T", "application/json", "-d", body]
    url = f"http://127.0.0.1:{HTTP}/v1.0/publish/{broker}/{RUN}-tp"
    out = subprocess.run([*args, url], capture_output=True, text=True, check=False).stdout
    return parse_hey(out, ok_codes=("204",))


async def measure(args: argparse.Namespace, chosen: list[str], work: Path) -> int:
    app = LatencyApp(chosen)
    async with backend(app) as app_port:
        log = (work / "sidecar.log").open("ab")
        argv = [*pinned(1), str(ROOT / ".venv/bin/meshwire"), "run", "--app-id", "bench-pubsub"]
        argv += ["--dapr-http-port", str(HTTP), "--dapr-grpc-port", str(GRPC), "--no-admin"]
        argv += ["--app-port", str(app_port), "--data-dir", str(work)]
        argv += ["--resources-path", str(work / "resources"), "--log-level", "warning"]
        sidecar = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
            argv, stdout=log, stderr=log, start_new_session=True
        )
        rows = []
        try:
            with trio.fail_after(60):
                while True:
                    try:
                        async with H1Client.connect(HTTP) as client:
                            reply = await client.request("GET", "/v1.0/metadata")
                        if len(json.loads(reply.body).get("subscriptions", [])) == len(chosen):
                            break
                    except (OSError, ValueError):
                        pass
                    if sidecar.poll() is not None:
                        print(f"the sidecar exited; see {work}/sidecar.log", file=sys.stderr)
                        return 1
                    await trio.sleep(0.2)
            for broker in chosen:
                await trio.to_thread.run_sync(hey_publish, broker, 1)  # warm-up
                throughput = await trio.to_thread.run_sync(hey_publish, broker, args.seconds)
                app.latencies[broker].clear()
                sent = await publish_at_rate(broker, args.rate, args.seconds)
                with trio.move_on_after(10):
                    while len(app.latencies[broker]) < sent:  # noqa: ASYNC110 - bench only
                        await trio.sleep(0.05)
                rows.append((broker, throughput, sent, list(app.latencies[broker])))
            rss = rss_mb(sidecar.pid)
        finally:
            await trio.to_thread.run_sync(stop, sidecar)
            log.close()
    print(f"\n## Pub/sub — {args.seconds} s per test, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"   sidecar pinned to CPU 1: {bool(pinned(1))}; HTTP/1.1; RSS after load {rss:.1f} MB\n")
    print(
        "| broker | publish msg/s (32 conns) | publish p50/p99 ms | errors "
        f"| delivered of sent @{args.rate}/s | publish→delivery p50/p99 ms |"
    )
    print("|---|---|---|---|---|---|")
    goals = []
    for broker, tp, sent, latencies in rows:
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100)
            p50, p99 = cuts[49], cuts[98]
        else:
            p50 = p99 = float("nan")
        print(
            f"| {broker} | {tp['rps']:,.0f} | {tp.get('p50', 0):.2f}/{tp.get('p99', 0):.2f} "
            f"| {tp['bad']:.0f} | {len(latencies)}/{sent} | {p50:.2f}/{p99:.2f} |"
        )
        met = p99 <= GOAL_P99_MS and len(latencies) == sent
        goals.append(
            f"goal: {broker} publish->delivery p99 <= {GOAL_P99_MS:g} ms @{args.rate}/s: "
            f"{p99:.2f} ms, {len(latencies)}/{sent} delivered {'PASS' if met else 'FAIL'}"
        )
    print()
    print("\n".join(goals))
    measured = {broker: tp for broker, tp, *_ in rows}
    for broker, goal in GOAL_RATE.items():
        name, want = f"pubsub publish {broker}", f">= {goal:,} msg/s"
        got = measured.get(broker)
        if got is None:
            target(name, "not measured (not in --brokers)", want, None)
        elif got["bad"]:
            target(name, f"{got['rps']:,.0f} msg/s with {got['bad']:.0f} errors", want, False)
        else:
            target(name, f"{got['rps']:,.0f} msg/s", want, got["rps"] >= goal)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--brokers", default=",".join(BROKERS))
    args = parser.parse_args()
    if not shutil.which("hey"):
        print("hey is missing: run `make bench-tools`", file=sys.stderr)
        return 2
    chosen = [b for b in args.brokers.split(",") if b]
    unknown = [b for b in chosen if b not in BROKERS]
    if unknown:
        print(f"unknown brokers: {unknown}; known: {', '.join(BROKERS)}", file=sys.stderr)
        return 2
    busy = [p for p in (HTTP, GRPC) if not port_free(p)]
    if busy:
        print(
            f"ports already in use: {busy}; refusing to measure a foreign server", file=sys.stderr
        )
        return 1
    if "rabbitmq" in chosen and ensure_rabbitmq_vhost() is None:  # dropped again at the end
        BROKERS["rabbitmq"] = ("pubsub.rabbitmq", {"connectionString": RABBITMQ_URL})
    work = Path(tempfile.mkdtemp(prefix="meshwire-pubsub-bench."))
    (work / "resources").mkdir()
    components(work / "resources", chosen)
    if pinned(0):
        os.sched_setaffinity(0, {0})
    try:
        return trio.run(measure, args, chosen, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        purge_test_topics()


if __name__ == "__main__":
    sys.exit(main())
