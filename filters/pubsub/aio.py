"""An asyncio event loop on its own thread, for broker clients that only speak asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

__all__ = ["AsyncioThread"]

T = TypeVar("T")


class AsyncioThread:
    """Runs coroutines on a private asyncio loop and awaits them from trio.

    `call` cancels the asyncio task when the awaiting trio task is cancelled. `to_trio`
    schedules a plain function on the trio loop from the asyncio side (callbacks of a
    consumer); it must not block."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self._name}: asyncio thread is not started")
        return self._loop

    def start(self) -> None:
        """Start the loop's thread; call from trio (it remembers trio's token)."""
        if self._loop is not None:
            return
        self._token = trio.lowlevel.current_trio_token()
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
        self._thread.start()
        started.wait()
        self._loop = loop

    async def call(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `factory()` on the asyncio loop and return its result to trio."""
        loop = self.loop
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(_run(factory), loop)

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    def to_trio(self, fn: Callable[..., object], *args: object) -> None:
        """From the asyncio thread: run `fn(*args)` soon on the trio loop."""
        if self._token is None:
            raise RuntimeError(f"{self._name}: asyncio thread is not started")
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    async def aclose(self) -> None:
        """Stop the loop (cancelling what still runs on it) and join its thread."""
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await trio.to_thread.run_sync(thread.join)


async def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return await factory()
    except Exception:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The trio caller gave up (cancelled the future) and will never read this error;
            # end cancelled so asyncio does not log "Task exception was never retrieved".
            raise asyncio.CancelledError from None
        raise
