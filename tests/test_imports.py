"""The generic top-level names (proxy, filters, exporters, config) come from this repository."""

from pathlib import Path

import trio
import trio.lowlevel

import config
import exporters
import filters
import proxy

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_packages_are_this_repository() -> None:
    for module in (proxy, filters, exporters, config):
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().parent.parent == ROOT


async def test_trio_mode_runs_async_tests() -> None:
    await trio.lowlevel.checkpoint()
    assert trio.lowlevel.current_task().name
