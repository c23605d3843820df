"""`meshwire run --app-id` logs each unknown field of its Dapr resources once, and still starts."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from config.dapr.app_configuration import load_configuration
from config.dapr.resources import load_resources
from config.loader import ConfigError
from proxy.cli import parse_args
from proxy.run_config import load_run_config

ROOT = Path(__file__).resolve().parent.parent

CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: tracing}
spec:
  tracing:
    samplingRate: "1"
    zipkn: {endpointAddress: "http://127.0.0.1:9411/api/v2/spans"}
"""
COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec:
  type: state.in-memory
  version: v1
  initTimout: 5s
"""
ZIPKN = "$.spec.tracing.zipkn: unknown field (ignored; did you mean 'zipkin'?)"
INIT_TIMOUT = "$.spec.initTimout: unknown field (ignored; did you mean 'initTimeout'?)"


def files(tmp_path: Path, component: str = COMPONENT) -> tuple[Path, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIGURATION)
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "statestore.yaml").write_text(component)
    return config, resources


def run_args(tmp_path: Path, config: Path, resources: Path) -> list[str]:
    return [
        "run", "--app-id", "orders", "--data-dir", str(tmp_path / "data"),
        "--config", str(config), "--resources-path", str(resources),
    ]  # fmt: skip


def test_start_up_logs_each_unknown_field_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, resources = files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="meshwire"):
        load_run_config(parse_args(run_args(tmp_path, config, resources)))
        # What the runtime loads again later must not log a second time.
        load_resources([resources], "orders")
        load_configuration(config)
    logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("meshwire", logging.WARNING, f"{config}: {ZIPKN}"),
        ("meshwire", logging.WARNING, f"{resources / 'statestore.yaml'}: {INIT_TIMOUT}"),
    ]


def test_a_refused_resource_still_logs_its_unknown_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`typ:` for `type:` is refused (type is required); the warning says why."""
    config, resources = files(tmp_path, COMPONENT.replace("  type:", "  typ:"))
    with caplog.at_level(logging.WARNING, logger="meshwire"):
        with pytest.raises(ConfigError) as info:
            load_run_config(parse_args(run_args(tmp_path, config, resources)))
    assert [p.path for p in info.value.problems] == ["$.spec.type"]
    assert f"{resources / 'statestore.yaml'}: $.spec.typ: unknown field (ignored; " in caplog.text


def test_the_process_logs_the_warning_and_starts(tmp_path: Path) -> None:
    config, resources = files(tmp_path)
    argv = [sys.executable, "-m", "proxy", *run_args(tmp_path, config, resources)]
    result = subprocess.run(
        [*argv, "--dump-config"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "unknown field" in line]
    assert len(warnings) == 2, result.stderr
    assert warnings[0].endswith(f"WARNING meshwire: {config}: {ZIPKN}")


def test_envoy_mode_logs_the_dapr_configuration_s_unknown_fields(tmp_path: Path) -> None:
    config, _ = files(tmp_path)
    argv = ["run", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1"]
    result = subprocess.run(
        [sys.executable, "-m", "proxy", *argv, "--dapr-config", str(config), "--dump-config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "unknown field" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].endswith(f"WARNING meshwire: {config}: {ZIPKN}")
