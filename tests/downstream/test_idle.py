"""The idle-connection registry: overload scaling, eviction order, and an evicted HTTP/1.1 wait."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from proxy.downstream.h1 import serve_h1
from proxy.downstream.idle import MIN_SCALE, IdleConnections
from proxy.stats import Gauge
from tests.downstream.helpers import Recorder, hello, pair, read_to_eof, read_until, until


def registry(active: int, cap: int = 100) -> IdleConnections:
    gauge = Gauge("cx_active")
    gauge.value = active
    return IdleConnections(cap, 0.8, gauge)


@pytest.mark.parametrize(
    ("active", "scale"), [(0, 1.0), (80, 1.0), (90, (1 + MIN_SCALE) / 2), (100, MIN_SCALE)]
)
def test_waits_shrink_linearly_past_the_threshold(active: int, scale: float) -> None:
    assert registry(active).scale() == pytest.approx(scale)


async def test_a_wait_under_load_gets_the_scaled_timeout() -> None:
    calm, busy = registry(10), registry(100)
    now = trio.current_time()
    assert calm.open(10.0).deadline - now == pytest.approx(10.0, abs=0.5)
    assert busy.open(10.0).deadline - now == pytest.approx(10.0 * MIN_SCALE, abs=0.5)
    assert busy.open(0).deadline == math.inf  # no limit stays no limit


async def test_eviction_cancels_the_oldest_wait_first() -> None:
    idle = registry(100)
    old, mid, new = idle.open(10), idle.open(10), idle.open(10)
    idle.close(mid)  # its bytes came: no longer a candidate
    assert idle.evict()
    assert (old.cancel_called, new.cancel_called) == (True, False)
    assert idle.evict()
    assert new.cancel_called
    assert not idle.evict()  # nothing left waiting


async def test_a_watched_scope_is_evicted_like_an_opened_one() -> None:
    idle = registry(100)
    own = trio.CancelScope()
    idle.watch(own)
    later = idle.open(10)
    assert idle.evict()
    assert (own.cancel_called, later.cancel_called) == (True, False)


async def test_cancel_all_ends_every_wait() -> None:
    idle = registry(0)
    scopes = [idle.open(10) for _ in range(3)]
    idle.cancel_all()
    assert all(s.cancel_called for s in scopes)
    assert len(idle) == 0


async def test_an_evicted_keep_alive_connection_is_closed(nursery: trio.Nursery) -> None:
    rec = Recorder(hello)
    ctx = rec.context()
    client, server = pair()
    nursery.start_soon(serve_h1, server, ctx)
    await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await read_until(client, b"hi")
    await until(lambda: len(ctx.idle) == 1)  # waiting for the next request
    assert ctx.idle.evict()
    assert await read_to_eof(client) == b""
