"""The `codec` key and `--codec` flag: which parser each leg gets, and the start-up errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.loader import ConfigError, load_file
from proxy import app as app_module
from proxy.cli import parse_args
from proxy.http1.codec import CodecUnavailable, choose
from proxy.run_config import load_run_config

ROOT = Path(__file__).resolve().parents[2]


def test_auto_prefers_httptools() -> None:
    assert choose("auto").name == "httptools"
    assert choose("h11").name == "h11"


def test_one_choice_reaches_listeners_and_pools() -> None:
    args = parse_args(
        ["run", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", "--codec", "h11"]
    )
    config = load_run_config(args)
    assert config.codec == "h11"
    built = app_module.build(config)
    assert built.codec.name == "h11"
    cluster = built.clusters.get("upstream")
    assert cluster is not None
    assert cluster.hosts[0].pool.codec is built.codec  # type: ignore[attr-defined]


def test_the_flag_reaches_sidecar_mode() -> None:
    config = load_run_config(parse_args(["run", "--app-id", "a", "--codec", "h11"]))
    assert config.codec == "h11"


def test_a_bad_value_is_a_config_problem_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("codec: fast\n")
    with pytest.raises(ConfigError) as caught:
        load_file(str(path))
    assert [p.path for p in caught.value.problems] == ["$.codec"]


def test_httptools_missing_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "httptools.py").write_text("raise ImportError('not here')\n")
    args = ["run", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", "--codec"]
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "httptools"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "command line: codec httptools: the httptools package is not installed"
    ]
    fallback = subprocess.run(
        [sys.executable, "-c", "from proxy.http1.codec import AUTO; print(AUTO.name)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )
    assert fallback.stdout.strip() == "h11"  # auto without httptools


def test_choose_refuses_httptools_only_when_it_is_missing() -> None:
    assert choose("httptools").name == "httptools"
    assert issubclass(CodecUnavailable, ValueError)  # app.build's errors end start-up (exit 2)
