"""Sidecars as real processes: `-- CMD` starts the app, a SIGKILLed target fails fast, recovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.integration.harness import H1Client, Reply
from tests.integration.test_process import free_port, meshwire_cmd

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60

# A stdlib HTTP app that answers every request with its Dapr environment and the path.
APP = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        keys = ("APP_ID", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "APP_PORT")
        body = json.dumps({"env": {k: os.environ.get(k) for k in keys}, "path": self.path,
                           "caller": self.headers.get("dapr-caller-app-id")}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), H).serve_forever()
"""


@asynccontextmanager
async def sidecar_process(
    app_id: str,
    data_dir: Path,
    http_port: int,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[trio.Process]:
    """`meshwire run --app-id APP_ID ARGS` until the block ends; outbound-ready when yielded."""
    argv = ["run", "--app-id", app_id, "--dapr-http-port", str(http_port), "--no-admin"]
    argv += ["--dapr-grpc-port", str(free_port())]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning", *args]
    proc = await trio.lowlevel.open_process(meshwire_cmd(*argv), cwd=ROOT, env=env)
    try:
        with trio.fail_after(DEADLINE):
            while True:
                assert proc.poll() is None, f"sidecar {app_id} exited during start-up"
                try:
                    reply = await get(http_port, "/v1.0/healthz/outbound")
                except (OSError, trio.BrokenResourceError):
                    await trio.sleep(0.05)
                    continue
                if reply.status == 204:
                    break
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(DEADLINE):
                await proc.wait()
            if proc.poll() is None:
                proc.kill()
                await proc.wait()


async def get(port: int, target: str) -> Reply:
    async with H1Client.connect(port) as client:
        return await client.request("GET", target)


async def until_status(port: int, target: str, status: int) -> Reply:
    with trio.fail_after(DEADLINE):
        while True:
            reply = await get(port, target)
            if reply.status == status:
                return reply
            await trio.sleep(0.1)


async def test_the_app_runs_as_a_child_with_daprs_environment(tmp_path: Path) -> None:
    http, grpc, app_port = free_port(), free_port(), free_port()
    script = tmp_path / "app.py"
    script.write_text(APP)
    child = ["--app-port", str(app_port), "--dapr-grpc-port", str(grpc)]
    child += ["--", sys.executable, str(script)]
    async with sidecar_process("orders", tmp_path, http, *child):
        await until_status(http, "/v1.0/healthz", 204)  # waits for the app's port
        reply = await get(http, "/v1.0/invoke/orders/method/hello?x=1")
    assert reply.status == 200
    seen = json.loads(reply.body)
    assert seen["env"] == {
        "APP_ID": "orders",
        "DAPR_HTTP_PORT": str(http),
        "DAPR_GRPC_PORT": str(grpc),
        "APP_PORT": str(app_port),
    }
    assert seen["path"] == "/hello?x=1"
    assert seen["caller"] == "orders"


def test_the_sidecar_exits_when_its_app_exits(tmp_path: Path) -> None:
    http = free_port()
    argv = ["run", "--app-id", "batch", "--dapr-http-port", str(http), "--no-admin"]
    argv += ["--dapr-grpc-port", "0"]
    argv += ["--data-dir", str(tmp_path), "--", sys.executable, "-c", "print('done')"]
    result = subprocess.run(
        meshwire_cmd(*argv), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout


async def test_a_killed_target_sidecar_fails_fast_and_recovers(tmp_path: Path) -> None:
    a_http, b_http, b_app = free_port(), free_port(), free_port()
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {**os.environ, "APP_PORT": str(b_app)}
    app = await trio.lowlevel.open_process([sys.executable, str(script)], env=env)
    try:
        async with sidecar_process("front", tmp_path, a_http):
            async with sidecar_process("back", tmp_path, b_http, "--app-port", str(b_app)) as b:
                ok = await until_status(a_http, "/v1.0/invoke/back/method/ping", 200)
                assert json.loads(ok.body)["caller"] == "front"
                b.kill()
                await b.wait()
                with trio.fail_after(15):  # built-in retries: 3 x 1 s, then ERR_DIRECT_INVOKE
                    failed = await get(a_http, "/v1.0/invoke/back/method/ping")
                assert failed.status == 500
                assert json.loads(failed.body)["errorCode"] == "ERR_DIRECT_INVOKE"
            async with sidecar_process("back", tmp_path, b_http, "--app-port", str(b_app)):
                back = await until_status(a_http, "/v1.0/invoke/back/method/ping", 200)
                assert json.loads(back.body)["path"] == "/ping"
    finally:
        app.kill()
        await app.wait()


def test_ca_init_creates_the_ca_once_and_sidecars_sign_from_it(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    first = subprocess.run(
        meshwire_cmd("ca", "init", str(ca_dir)), cwd=ROOT, capture_output=True, text=True
    )
    root = (ca_dir / "ca.crt").read_bytes()
    again = subprocess.run(
        meshwire_cmd("ca", "init", str(ca_dir)), cwd=ROOT, capture_output=True, text=True
    )
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert "trust domain public" in first.stdout
    assert (ca_dir / "ca.crt").read_bytes() == root  # kept, not replaced
    assert (ca_dir / "issuer.key").stat().st_mode & 0o077 == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ca.crt").write_text("not a certificate")
    bad = subprocess.run(
        meshwire_cmd("ca", "init", str(broken)), cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert str(broken) in bad.stderr  # the message names the file at fault


def test_ca_init_without_dir_uses_the_sidecars_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "MESHWIRE_DATA_DIR": str(tmp_path / "data")}
    made = subprocess.run(
        meshwire_cmd("ca", "init"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "data" / "ca" / "ca.crt").is_file()  # where sidecars look (--data-dir)
    assert made.stdout.startswith(f"{tmp_path / 'data' / 'ca'}: trust domain public")
    usage = subprocess.run(
        meshwire_cmd("ca", "init", "--help"), cwd=ROOT, capture_output=True, text=True
    )
    assert "[DIR]" in usage.stdout
    assert "$MESHWIRE_DATA_DIR/ca, else ~/.meshwire/ca" in " ".join(usage.stdout.split())


def test_the_dapr_examples_load_and_the_dump_round_trips_through_validate(tmp_path: Path) -> None:
    examples = ROOT / "config" / "examples" / "dapr"
    argv = ["run", "--app-id", "billing", "--app-port", "8080", "--data-dir", str(tmp_path)]
    argv += ["--config", str(examples / "config.yaml")]
    argv += ["--resources-path", str(examples / "resources"), "--dump-config"]
    dumped = subprocess.run(meshwire_cmd(*argv), cwd=ROOT, capture_output=True, text=True)
    assert dumped.returncode == 0, dumped.stderr
    assert "config_file:" in dumped.stdout
    config = tmp_path / "dumped.yaml"
    config.write_text(dumped.stdout)
    check = subprocess.run(
        meshwire_cmd("validate", str(config)), cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "r.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\n"
        "spec: {policies: {retries: {x: {maxRetries: many}}}}\n"
    )
    argv = ["run", "--app-id", "a", "--resources-path", str(bad), "--dump-config"]
    refused = subprocess.run(meshwire_cmd(*argv), cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "$.spec.policies.retries.x.maxRetries" in refused.stderr


def test_a_state_store_that_cannot_start_stops_the_sidecar_with_its_reason(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "cache.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: cache}\n"
        f"spec:\n  type: state.redis\n  version: v1\n  metadata:\n"
        f"  - {{name: redisHost, value: '127.0.0.1:{free_port()}'}}\n"
    )
    argv = ["run", "--app-id", "a", "--dapr-http-port", "0", "--dapr-grpc-port", "0"]
    argv += ["--no-admin", "--data-dir", str(tmp_path), "--resources-path", str(resources)]
    result = subprocess.run(
        meshwire_cmd(*argv), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2
    assert "state store cache (state.redis)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broker_that_cannot_start_stops_the_sidecar_with_its_reason(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "events.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: events}\n"
        "spec:\n  type: pubsub.redis\n  version: v1\n  initTimeout: 3s\n  metadata:\n"
        f"  - {{name: redisHost, value: '127.0.0.1:{free_port()}'}}\n"
    )
    argv = ["run", "--app-id", "a", "--dapr-http-port", "0", "--dapr-grpc-port", "0"]
    argv += ["--no-admin", "--data-dir", str(tmp_path), "--resources-path", str(resources)]
    result = subprocess.run(
        meshwire_cmd(*argv), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2
    assert "pubsub events (pubsub.redis)" in result.stderr
    assert "Traceback" not in result.stderr
