"""`make demo` stays true: the demo config loads and its self-check passes (on free ports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_self_check_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.demo", "--check", "--ephemeral"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-check GET /hello: 200 ok" in result.stdout
    assert "self-check GET /nowhere: 404 ok" in result.stdout
    assert '"response_flags":"NR"' in result.stdout  # the access log line of the 404
