"""Deferred: a terminal built by its first request, its modules imported on a worker thread."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import trio

from filters.deferred import Deferred
from proxy.chain import Handler
from proxy.http.model import BytesBody, EmptyBody, Request, Response


def request() -> Request:
    return Request(b"GET", b"/", [], EmptyBody())


async def answer(request: Request) -> Response:
    return Response(200, [], BytesBody(b"built"))


async def test_nothing_is_imported_or_built_before_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deferred_probe_a.py").write_text("import threading\nBY = threading.get_ident()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    built: list[int] = []

    def build() -> Handler:
        built.append(sys.modules["deferred_probe_a"].BY)
        return answer

    terminal = Deferred(build, ["deferred_probe_a"])
    assert built == []
    assert "deferred_probe_a" not in sys.modules
    try:
        response = await terminal(request())
    finally:
        sys.modules.pop("deferred_probe_a", None)
    assert response.status == 200
    assert await response.body.read() == b"built"
    assert len(built) == 1
    assert built[0] != threading.get_ident()  # imported on a worker thread, not the loop's


async def test_concurrent_first_requests_share_one_build() -> None:
    builds: list[None] = []

    def build() -> Handler:
        builds.append(None)
        return answer

    terminal = Deferred(build, ["json"])
    statuses: list[int] = []

    async def call() -> None:
        statuses.append((await terminal(request())).status)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(call)
    assert statuses == [200] * 5
    assert len(builds) == 1


async def test_a_failed_build_is_tried_again_by_the_next_request() -> None:
    attempts: list[None] = []

    def build() -> Handler:
        attempts.append(None)
        if len(attempts) == 1:
            raise RuntimeError("first build fails")
        return answer

    terminal = Deferred(build, [])
    with pytest.raises(RuntimeError, match="first build fails"):
        await terminal(request())
    assert (await terminal(request())).status == 200
    assert len(attempts) == 2
