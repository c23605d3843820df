"""A sidecar with two workers: invoked over mutual TLS with one identity, each event delivered
to its app once, in-memory components refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import redis
import trio
from cryptography import x509

from proxy.tls.ca import CertificateAuthority
from proxy.tls.contexts import load_chain, new_client_context
from proxy.tls.spiffe import SpiffeId
from tests.integration.test_process import free_port, meshwire_cmd
from tests.integration.test_sidecar_process import sidecar_process
from tests.pubsub.brokers import require_service
from tests.workers.helpers import ROOT, Supervised, request, supervised, until

EVENTS = 30
CONNECTIONS = 16
REDIS = ("127.0.0.1", 6379)

# The app: answers invocations, lists one subscription, records every delivery and every
# GET /dapr/subscribe (a line each in $RECORD).
APP = """
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
record = open(os.environ["RECORD"], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/dapr/subscribe":
            record.write("subscribe\\n")
            route = {"pubsubname": "events", "topic": os.environ["TOPIC"], "route": "/events"}
            return self.reply(json.dumps([route]).encode())
        caller = self.headers.get("dapr-caller-app-id")
        self.reply(json.dumps({"path": self.path, "caller": caller}).encode())
    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["content-length"])))
        record.write(json.dumps(event["data"]) + "\\n")
        self.reply(b"{}")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), H).serve_forever()
"""


def _redis_component(resources: Path) -> None:
    resources.mkdir()
    (resources / "events.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: events}\n"
        "spec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n"
        f"  - {{name: redisHost, value: '{REDIS[0]}:{REDIS[1]}'}}\n"
    )


async def _serials(port: int, data_dir: Path) -> list[int]:
    """The certificate the internal port presents, over CONNECTIONS connections (the kernel
    spreads them over the workers), to a client the sidecars' own CA vouches for."""
    ca = CertificateAuthority.init(data_dir / "ca", "public")
    cert = ca.issue(SpiffeId("public", "default", "probe"), timedelta(hours=1), timedelta(0))
    context = new_client_context(cert.trust_anchors_pem)
    load_chain([context], cert)
    serials = []
    for _ in range(CONNECTIONS):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, context, server_hostname="sidecar")
        with trio.fail_after(30):
            await tls.do_handshake()
        der = tls.getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        serials.append(x509.load_der_x509_certificate(der).serial_number)
        await trio.aclose_forcefully(tls)
    return serials


async def _publish(http: int, topic: str, n: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", http) as stream:
        body = json.dumps({"n": n}).encode()
        head = (
            f"POST /v1.0/publish/events/{topic} HTTP/1.1\r\nhost: x\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        await stream.send_all(head + body)
        reply = b""
        while chunk := await stream.receive_some():
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 204"), reply


async def test_two_workers_one_identity_each_event_once(tmp_path: Path) -> None:
    require_service("Redis", REDIS)
    data = tmp_path / "data"
    resources = tmp_path / "resources"
    _redis_component(resources)
    topic = f"mwtest-workers-{uuid.uuid4().hex[:12]}"
    record = tmp_path / "record.log"
    script = tmp_path / "app.py"
    script.write_text(APP)
    http, app_port, front_http = free_port(), free_port(), free_port()
    env = {**os.environ, "RECORD": str(record), "TOPIC": topic}
    args = ["--app-id", "back", "--app-port", str(app_port), "--dapr-http-port", str(http)]
    args += ["--dapr-grpc-port", str(free_port()), "--data-dir", str(data)]
    args += ["--resources-path", str(resources), "--log-level", "info"]
    try:
        async with supervised(tmp_path, *args, "--", sys.executable, str(script), env=env) as back:
            await until(_subscribed(back))
            async with sidecar_process("front", data, front_http):
                reply = await request(front_http, "GET", "/v1.0/invoke/back/method/hello")
                assert reply.status == 200, reply.body
                assert json.loads(reply.body) == {"path": "/hello", "caller": "front"}
            internal = json.loads((await back.get("/server_info")).body)["listeners"]
            serials = await _serials(int(internal["dapr-internal"].rpartition(":")[2]), data)
            assert len(set(serials)) == 1  # one workload certificate, the supervisor's
            name = "http.dapr-internal.downstream_cx_total"
            assert min([await back.stat(name, worker=i) for i in (0, 1)]) > 0  # both presented it

            for n in range(EVENTS):  # a connection each: both workers publish
                await _publish(http, topic, n)
            name = "http.dapr-http.downstream_rq_total"
            assert min([await back.stat(name, worker=i) for i in (0, 1)]) > 0

            async def all_delivered() -> bool:
                return len(_deliveries(record)) >= EVENTS

            await until(all_delivered)
            assert sorted(_deliveries(record)) == list(range(EVENTS))  # each exactly once

            async def all_counted() -> bool:  # counted once the app's answer is back
                return _ingress((await back.get("/metrics")).body.decode()) >= EVENTS

            await until(all_counted)
            assert _ingress((await back.get("/metrics")).body.decode()) == EVENTS
            assert _ingress((await back.get("/metrics?worker=1")).body.decode()) == 0
        assert record.read_text().count("subscribe\n") == 1  # one subscriber: worker 0
        assert back.stderr().count("subscribed to topic") == 1
        assert f"[worker 0]: subscribed to topic {topic}" in back.stderr()
    finally:
        redis.Redis(*REDIS).delete(topic)


def _subscribed(back: Supervised) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return "subscribed to topic" in back.stderr()

    return check


def _deliveries(record: Path) -> list[int]:
    return [
        json.loads(line)["n"] for line in record.read_text().splitlines() if line != "subscribe"
    ]


def _ingress(metrics: str) -> int:
    return sum(
        int(float(line.rpartition(" ")[2]))
        for line in metrics.splitlines()
        if line.startswith("dapr_component_pubsub_ingress_count{")
    )


def test_in_memory_components_are_refused_with_workers(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "cache.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: cache}\n"
        "spec: {type: state.in-memory, version: v1}\n"
    )
    argv = ["run", "--app-id", "a", "--dapr-http-port", "0", "--dapr-grpc-port", "0"]
    argv += ["--no-admin", "--data-dir", str(tmp_path), "--resources-path", str(resources)]
    result = subprocess.run(
        meshwire_cmd(*argv, "--concurrency", "2"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{resources / 'cache.yaml'}: $.spec.type: cache is state.in-memory, whose data lives"
        " in one process: with concurrency 2 each worker would have its own; use a shared state"
        " store (state.redis, state.sqlite, state.postgresql), or --concurrency 1"
    ]


async def test_a_renewed_certificate_reaches_every_worker(tmp_path: Path) -> None:
    """The supervisor renews the workload certificate at half-life (every 10 s here) and
    pushes it: the workers, serving all along, then present the one new certificate."""
    data = tmp_path / "data"
    configuration = tmp_path / "config.yaml"
    configuration.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: short}\n"
        "spec:\n  mtls: {workloadCertTTL: 20s, allowedClockSkew: 0s}\n"
    )
    args = ["--app-id", "short", "--dapr-http-port", "0", "--dapr-grpc-port", "0"]
    args += ["--data-dir", str(data), "--config", str(configuration)]
    async with supervised(tmp_path, *args) as sidecar:
        internal = json.loads((await sidecar.get("/server_info")).body)["listeners"]
        port = int(internal["dapr-internal"].rpartition(":")[2])

        def renewals() -> list[int]:
            """The serial of each certificate the supervisor renewed, in order."""
            lines = [ln for ln in sidecar.stderr().splitlines() if "rotated the workload" in ln]
            assert not any("[worker" in line for line in lines)  # never a worker
            return [int(ln.partition("(serial ")[2].partition(",")[0], 16) for ln in lines]

        seen: list[int] = []

        async def presented() -> bool:
            """Every connection presents the latest renewal, a newer one than last time."""
            found = renewals()
            if not found or found[-1] in seen:
                return False
            if set(await _serials(port, data)) != {found[-1]}:
                return False
            seen.append(found[-1])
            return True

        await until(presented, poll=0.2)  # a renewal reached both workers
        await until(presented, poll=0.2)  # and the next one too, while they serve
        assert len(set(seen)) == 2
        name = "http.dapr-internal.downstream_cx_total"
        assert min([await sidecar.stat(name, worker=i) for i in (0, 1)]) > 0

        # The app asks whichever worker it reaches to shut the sidecar down: all of it stops.
        http = int(internal["dapr-http"].rpartition(":")[2])
        assert (await request(http, "POST", "/v1.0/shutdown")).status == 204
        with trio.fail_after(60):
            await sidecar.process.wait()
    assert "the app asked the sidecar to shut down" in sidecar.stderr()
