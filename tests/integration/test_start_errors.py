"""`meshwire run` that cannot start: one line naming what failed and where it was set, exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_process import free_port, meshwire_cmd

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60
QUIET = ("--log-level", "warn")  # start-up info lines (a new CA, …) are not what is checked


@contextmanager
def busy_port() -> Iterator[int]:
    """A port some other program listens on while the block runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        meshwire_cmd("run", *args),
        cwd=ROOT,  # `python -m proxy` is this checkout's
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    for part in parts:
        assert part in lines[0], (part, lines[0])


def listener_config(path: Path, listen: str, admin: str) -> None:
    path.write_text(
        f"admin: {{address: '{admin}'}}\n"
        "listeners:\n"
        f"  - name: edge\n    address: '{listen}'\n"
        "    routes: [{match: {prefix: /}, direct_response: {status: 200}}]\n"
    )


def test_a_busy_config_listener_names_its_address_and_config_path(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    with busy_port() as port:
        listener_config(config, f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
        result = run("-c", str(config))
    assert_one_line(result, f"127.0.0.1:{port}", "edge.yaml: $.listeners[0].address", "in use")


def test_a_busy_config_admin_port_names_its_address_and_config_path(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    with busy_port() as port:
        listener_config(config, f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}")
        result = run("-c", str(config))
    assert_one_line(result, f"127.0.0.1:{port}", "edge.yaml: $.admin.address", "in use")


def test_a_busy_admin_flag_names_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    listener_config(config, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    with busy_port() as port:
        result = run("-c", str(config), "--admin", f"127.0.0.1:{port}")
    assert_one_line(result, f"127.0.0.1:{port}", "--admin", "in use")


def test_a_busy_quick_mode_listener_names_the_listen_flag() -> None:
    with busy_port() as port:
        result = run(
            "--listen", f"127.0.0.1:{port}", "--upstream", "http://127.0.0.1:9", "--no-admin"
        )
    assert_one_line(result, f"127.0.0.1:{port}", "--listen", "in use")


@pytest.mark.parametrize(
    "flag", ["--dapr-http-port", "--dapr-grpc-port", "--metrics-port", "--dapr-internal-grpc-port"]
)
def test_a_busy_sidecar_port_names_its_flag(tmp_path: Path, flag: str) -> None:
    ports = {"--dapr-http-port": "0", "--dapr-grpc-port": "0", "--metrics-port": "0"}
    with busy_port() as port:
        ports[flag] = str(port)
        argv = ["--app-id", "a", "--data-dir", str(tmp_path), *QUIET]
        argv += [item for pair in ports.items() for item in pair]
        result = run(*argv)
    assert_one_line(result, f"127.0.0.1:{port}", flag, "in use")


def test_a_file_start_up_cannot_open_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "access.log"
    quick = ["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", "--no-admin"]
    result = run(*quick, "--access-log", str(missing))
    assert_one_line(result, str(missing), "no such file")


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "nowhere.yaml"],
        ["--app-id", "a", "--config", "nowhere.yaml"],
        ["--app-id", "a", "--dapr-config", "nowhere.yaml"],
        [
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
            "--dapr-config",
            "nowhere.yaml",
        ],
    ],
)
def test_a_missing_config_file_is_one_line(argv: list[str]) -> None:
    result = run(*argv)  # refused before anything is built: no data dir is written
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["nowhere.yaml: no such file"]


def test_a_sidecar_resource_problem_names_its_file_once(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
        "spec: {mtls: {workloadCertTTL: soon}}\n"
    )
    data = str(tmp_path / "data")
    result = run("--app-id", "a", "--data-dir", data, "--config", str(config), "--dump-config")
    assert_one_line(result, f"{config}: $.spec.mtls.workloadCertTTL: expected a Go duration")
    assert result.stderr.count(str(config)) == 1
    nowhere = tmp_path / "nowhere"
    result = run("--app-id", "a", "--data-dir", data, "--resources-path", str(nowhere))
    assert_one_line(result)
    assert result.stderr == f"{nowhere}: $: no such file or directory\n"


# Loaded at interpreter start-up (sitecustomize): every bind raises a Python warning, as a
# library deprecating something would, from inside the running process.
WARN_ON_BIND = """
import sys, warnings
def _warn(event, args):
    if event == "socket.bind":
        warnings.warn("a socket is being bound", UserWarning)
sys.addaudithook(_warn)
"""


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ("busy port", "--dapr-http-port: cannot listen on"),
        ("missing config", "nowhere.yaml: no such file"),
        ("app not found", "cannot start the app 'meshwire-no-such-app'"),
        ("bad component", "state store cache (state.nope): unknown state store type"),
    ],
)
def test_with_log_as_json_every_line_is_json(tmp_path: Path, failure: str, expected: str) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WARN_ON_BIND)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    argv = ["--app-id", "a", "--data-dir", str(tmp_path), "--log-as-json", "--no-admin"]
    argv += ["--dapr-grpc-port", "0"]
    with busy_port() as port:
        if failure == "busy port":
            argv += ["--dapr-http-port", str(port)]
        else:
            argv += ["--dapr-http-port", "0"]
        if failure == "missing config":
            argv += ["--config", "nowhere.yaml"]
        if failure == "bad component":
            resources = tmp_path / "resources"
            resources.mkdir()
            (resources / "cache.yaml").write_text(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: cache}\n"
                "spec: {type: state.nope, version: v1}\n"
            )
            argv += ["--resources-path", str(resources)]
        if failure == "app not found":
            argv += ["--", "meshwire-no-such-app"]
        result = run(*argv, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on the first line that is not JSON
    fatal = [r for r in records if r["level"] == "fatal"]
    assert len(fatal) == 1, records
    assert expected in fatal[0]["msg"]
    assert fatal[0]["app_id"] == "a"
    if failure != "missing config":  # refused before anything binds: no warning to see
        warned = [r for r in records if r["scope"] == "py.warnings"]
        assert warned, records
        assert "a socket is being bound" in warned[0]["msg"]
