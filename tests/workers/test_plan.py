"""The worker plan: how many, each worker's config, and what a sidecar cannot spread."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from config import schema
from proxy.cli import parse_args
from proxy.run_config import quick_config
from proxy.sidecar.options import sidecar_config
from proxy.workers.plan import refusals, worker_config, worker_count


def test_auto_and_zero_are_one_worker_per_cpu_this_process_may_use() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert worker_count("auto") == worker_count(0) == cpus
    assert worker_count(3) == 3


def test_a_worker_listens_where_its_supervisor_reserved_and_has_no_admin() -> None:
    config = quick_config("127.0.0.1:0", ["http://127.0.0.1:9"], None, None)
    config = msgspec.structs.replace(config, concurrency=2)
    mine = worker_config(config, {"ingress": "127.0.0.1:4321"}, 1, 2)
    assert [listener.address for listener in mine.listeners] == ["127.0.0.1:4321"]
    assert (mine.admin, mine.concurrency) == (None, 1)
    assert mine.clusters == config.clusters


def _sidecar(tmp_path: Path, *flags: str) -> schema.Config:
    args = parse_args(["run", "--app-id", "a", "--data-dir", str(tmp_path), *flags])
    return sidecar_config(args)


def test_the_app_call_limit_is_split_so_the_shares_add_up_to_it(tmp_path: Path) -> None:
    config = _sidecar(tmp_path, "--app-port", "9", "--app-max-concurrency", "5")
    addresses = {listener.name: "127.0.0.1:1" for listener in config.listeners}
    shares = []
    for index in range(3):
        sidecar = worker_config(config, addresses, index, 3).sidecar
        assert sidecar is not None
        assert sidecar.app is not None
        shares.append(sidecar.app.max_concurrency)
    assert shares == [2, 2, 1]
    unlimited = _sidecar(tmp_path, "--app-port", "9")
    sidecar = worker_config(unlimited, addresses, 0, 3).sidecar
    assert sidecar is not None
    assert sidecar.app is not None
    assert sidecar.app.max_concurrency == -1


def test_a_limit_smaller_than_the_workers_is_refused(tmp_path: Path) -> None:
    config = _sidecar(tmp_path, "--app-port", "9", "--app-max-concurrency", "1")
    config = msgspec.structs.replace(config, concurrency=2)
    [problem] = refusals(config, flags=True)
    assert problem.path == "--app-max-concurrency"
    assert problem.message.startswith("1 call(s) to the app at a time cannot be split over 2")
    assert refusals(msgspec.structs.replace(config, concurrency=1), flags=True) == []


def test_in_memory_components_are_refused_naming_their_file(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    for name, kind in (("cache", "state.in-memory"), ("events", "pubsub.in-memory")):
        (resources / f"{name}.yaml").write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
            f"metadata: {{name: {name}}}\nspec: {{type: {kind}, version: v1}}\n"
        )
    config = _sidecar(tmp_path, "--resources-path", str(resources))
    assert refusals(config, flags=True) == []  # one process: they are fine
    problems = refusals(msgspec.structs.replace(config, concurrency=2), flags=True)
    assert [(p.source, p.path) for p in problems] == [
        (str(resources / "cache.yaml"), "$.spec.type"),
        (str(resources / "events.yaml"), "$.spec.type"),
    ]
    assert problems[0].message.startswith("cache is state.in-memory, whose data lives in one")
