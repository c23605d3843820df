"""`meshwire ca serve` as a process: sidecars with separate data dirs get certificates from it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.integration.test_process import free_port, meshwire_cmd
from tests.integration.test_sidecar_process import APP, sidecar_process, until_status

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60
TOKENS = "t-front front\nt-back back\n"


@dataclass
class SigningService:
    address: str
    anchors: str
    log: Path


def healthz(port: int, anchors: str) -> int:
    ctx = ssl.create_default_context(cadata=anchors)
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@asynccontextmanager
async def ca_serve(tmp_path: Path) -> AsyncIterator[SigningService]:
    """`meshwire ca init` then `meshwire ca serve` on a free port; SIGTERM must exit 0."""
    ca_dir, tokens, log = tmp_path / "ca", tmp_path / "tokens", tmp_path / "ca-serve.log"
    await trio.run_process(meshwire_cmd("ca", "init", str(ca_dir)), cwd=ROOT, capture_stdout=True)
    anchors = (ca_dir / "ca.crt").read_text()
    tokens.write_text(TOKENS)
    port = free_port()
    argv = ["ca", "serve", "--ca-dir", str(ca_dir), "--listen", f"127.0.0.1:{port}"]
    argv += ["--token-file", str(tokens), "--hostname", "localhost"]
    with log.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(meshwire_cmd(*argv), cwd=ROOT, stderr=stderr)
    try:
        with trio.fail_after(DEADLINE):
            while True:
                assert proc.poll() is None, f"ca serve exited: {log.read_text()}"
                try:
                    if await trio.to_thread.run_sync(healthz, port, anchors) == 204:
                        break
                except OSError:
                    await trio.sleep(0.05)
        yield SigningService(f"https://127.0.0.1:{port}", anchors, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(DEADLINE):
            await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, log.read_text()


def sidecar_argv(app_id: str, data_dir: Path, http: int, config: Path, address: str) -> list[str]:
    argv = ["run", "--app-id", app_id, "--dapr-http-port", str(http), "--no-admin"]
    argv += ["--dapr-grpc-port", str(free_port()), "--data-dir", str(data_dir)]
    argv += ["--config", str(config), "--sentry-address", address, "--log-level", "warning"]
    return meshwire_cmd(*argv)


def shared_resolution(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: mesh}\n"
        "spec:\n  nameResolution:\n    component: sqlite\n"
        f"    configuration: {{connectionString: {tmp_path / 'names.db'}}}\n"
    )
    return config


def environment(service: SigningService, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAPR_", "MESHWIRE_"))}
    return {**env, "DAPR_TRUST_ANCHORS": service.anchors, "MESHWIRE_CA_TOKEN": token}


async def test_sidecars_on_separate_data_dirs_call_each_other_with_signed_certificates(
    tmp_path: Path,
) -> None:
    config = shared_resolution(tmp_path)
    script = tmp_path / "app.py"
    script.write_text(APP)
    front_dir, back_dir = tmp_path / "front", tmp_path / "back"
    front_http, back_http, back_app = free_port(), free_port(), free_port()
    async with ca_serve(tmp_path) as service:
        signing = ("--config", str(config), "--sentry-address", service.address)
        app = ("--app-port", str(back_app), "--", sys.executable, str(script))
        async with (
            sidecar_process(
                "back", back_dir, back_http, *signing, *app, env=environment(service, "t-back")
            ),
            sidecar_process(
                "front", front_dir, front_http, *signing, env=environment(service, "t-front")
            ),
        ):
            reply = await until_status(front_http, "/v1.0/invoke/back/method/x?y=1", 200)
    seen = json.loads(reply.body)
    assert seen["path"] == "/x?y=1"
    assert seen["caller"] == "front"
    assert not (front_dir / "ca").exists()  # no local CA: both certificates came from the service
    assert not (back_dir / "ca").exists()
    signed = service.log.read_text()
    assert "signed spiffe://public/ns/default/front" in signed
    assert "signed spiffe://public/ns/default/back" in signed
    assert "t-front" not in signed  # tokens never reach the log


async def test_a_sidecar_with_a_wrong_token_does_not_start(tmp_path: Path) -> None:
    config = shared_resolution(tmp_path)
    async with ca_serve(tmp_path) as service:
        argv = sidecar_argv("front", tmp_path / "front", free_port(), config, service.address)
        with trio.fail_after(DEADLINE):
            result = await trio.run_process(
                argv,
                cwd=ROOT,
                env=environment(service, "t-back"),  # a real token, for another app
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
            unknown = await trio.run_process(
                argv,
                cwd=ROOT,
                env=environment(service, "t-guessed"),
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
            no_anchors = await trio.run_process(
                argv,
                cwd=ROOT,
                env={**environment(service, "t-front"), "DAPR_TRUST_ANCHORS": ""},
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
    forbidden, refused = result.stderr.decode(), unknown.stderr.decode()
    unverifiable = no_anchors.stderr.decode()
    assert result.returncode != 0
    assert f"{service.address}: the token may not sign for spiffe://public/ns/default/front" in (
        forbidden
    )
    assert "HTTP 403" in forbidden
    assert unknown.returncode != 0
    assert f"{service.address}: token rejected (HTTP 401)" in refused
    assert no_anchors.returncode != 0
    assert f"DAPR_TRUST_ANCHORS: not set (needed to verify {service.address})" in unverifiable
    assert "Traceback" not in forbidden + refused + unverifiable
