"""Discovery test helpers: a clock the test moves by hand, waiting on a condition."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


class FakeClock:
    """Callable like time.time; only `advance` moves it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(check: Callable[[], Awaitable[bool]], *, deadline: float = 5.0) -> None:
    """Wait until `check()` is true, failing the test after `deadline` seconds."""
    with trio.fail_after(deadline):
        while True:
            if await check():
                return
            await trio.sleep(0.01)
