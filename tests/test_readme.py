"""The README tells the truth: its paths exist in this repository and its examples run as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TOP_LEVEL = ("ARCHITECTURE.md", ".ci", "bench", "config", "dashboards", "proxy", "filters",
             "exporters", "tests")  # fmt: skip
PATH = re.compile(
    r"(?<![\w/.~<-])((?:" + "|".join(re.escape(t) for t in TOP_LEVEL) + r")(?:/[\w.*-]+)*/?)"
)


def _meshwire(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *argv], cwd=ROOT, capture_output=True, text=True
    )


def test_the_readme_points_only_at_files_inside_the_repository() -> None:
    assert "../" not in README
    named = {match.group(1) for match in PATH.finditer(README)}
    assert "ARCHITECTURE.md" in named  # the architecture overview lives here, not outside
    missing = [path for path in sorted(named) if not any(ROOT.glob(path.rstrip("/")))]
    assert missing == []


def test_the_validate_examples_exit_0() -> None:
    lines = [ln for ln in README.splitlines() if ln.startswith("meshwire validate ")]
    assert len(lines) >= 2  # meshwire configs, and Dapr resources
    for line in lines:
        argv = line.split("#")[0].split()[1:]
        result = _meshwire(*argv)
        assert (result.returncode, result.stderr) == (0, ""), line
        assert all(out.endswith(": ok") for out in result.stdout.splitlines()), result.stdout


def test_the_invalid_yaml_sample_is_what_validate_prints() -> None:
    block = README.split("$ meshwire validate config/examples/invalid.yaml\n", 1)[1]
    shown = [ln for ln in block.split("```", 1)[0].splitlines() if ln and ln != "..."]
    result = _meshwire("validate", "config/examples/invalid.yaml")
    assert result.returncode == 2
    printed = result.stderr.splitlines()
    assert len(shown) >= 3
    missing = [ln for ln in shown if ln not in printed]
    assert missing == []


def test_mixed_upstream_schemes_are_refused_as_the_readme_says() -> None:
    assert "share one scheme" in " ".join(README.split())
    result = _meshwire(
        "run", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1",
        "--upstream", "h2c://127.0.0.1:2", "--no-admin",
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "command line: --upstream: all upstreams must use the same scheme"
    )


def _database_files() -> set[str]:
    """The SQLite files the examples make: the embedded stores' default names (in the data
    directory, which may be `--data-dir .`) and any relative file an example Component names."""
    import yaml

    found = {"state.db", "pubsub.db", "nameresolution.db"}
    for path in (ROOT / "config" / "examples").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "Component":
                continue
            for item in doc["spec"].get("metadata") or []:
                if item["name"] == "connectionString" and str(item["value"]).endswith(".db"):
                    found.add(str(item["value"]))
    return found


def test_gitignore_covers_the_sqlite_files_the_examples_create() -> None:
    names = [f"{db}{end}" for db in _database_files() for end in ("", "-wal", "-shm", "-journal")]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True
    )
    if ignored.returncode == 128:
        pytest.skip(f"not a git checkout: {ignored.stderr.strip()}")
    assert sorted(ignored.stdout.split()) == sorted(names)


def test_the_venv_puts_meshwire_on_path_as_the_readme_says() -> None:
    assert ". .venv/bin/activate" in README
    venv = Path(sys.prefix)  # the venv running these tests: .venv under make test
    shown = subprocess.run(
        ["bash", "-c", f". {venv}/bin/activate && meshwire --version"],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("meshwire ")
