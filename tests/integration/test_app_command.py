"""`meshwire run --app-id … -- CMD ARGS`: the help shows it, meshwire exits as its app does."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.integration.test_process import free_port, meshwire_cmd
from tests.integration.test_sidecar_process import sidecar_process

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60


def sidecar_with_app(data_dir: Path, *command: str) -> subprocess.CompletedProcess[str]:
    argv = ["run", "--app-id", "batch", "--dapr-http-port", "0", "--dapr-grpc-port", "0"]
    argv += ["--no-admin", "--data-dir", str(data_dir), "--log-level", "warn", "--", *command]
    return subprocess.run(
        meshwire_cmd(*argv), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE
    )


def test_run_help_shows_how_to_start_the_app() -> None:
    result = subprocess.run(
        meshwire_cmd("run", "--help"), cwd=ROOT, capture_output=True, text=True, check=True
    )
    usage = result.stdout.split("\n\n")[0]
    assert "--app-id ID [options] [-- CMD ARGS...]" in usage
    assert "exit code" in result.stdout


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("raise SystemExit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + 9),
        ("print('done')", 0),
    ],
)
def test_meshwire_exits_with_the_apps_status(tmp_path: Path, script: str, status: int) -> None:
    result = sidecar_with_app(tmp_path, sys.executable, "-c", script)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_command_that_is_not_found_is_one_line(tmp_path: Path) -> None:
    result = sidecar_with_app(tmp_path, "meshwire-no-such-app", "--port", "1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "meshwire: cannot start the app 'meshwire-no-such-app': command not found"
    ]


def test_an_app_file_that_is_not_executable_is_one_line(tmp_path: Path) -> None:
    app = tmp_path / "app.sh"
    app.write_text("#!/bin/sh\necho never\n")
    app.chmod(0o644)
    result = sidecar_with_app(tmp_path, str(app))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert str(app) in lines[0]
    assert "permission denied" in lines[0]
    assert "never" not in result.stdout


async def test_meshwire_stopped_by_sigterm_stops_the_app_and_exits_0(tmp_path: Path) -> None:
    """The app then dies of the SIGTERM meshwire sends it: that is meshwire's doing, not a
    failure to report as 143."""
    app = [sys.executable, "-c", "import time; time.sleep(3600)"]
    async with sidecar_process("batch", tmp_path, free_port(), "--", *app) as proc:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(DEADLINE):
            await proc.wait()
    assert proc.returncode == 0
