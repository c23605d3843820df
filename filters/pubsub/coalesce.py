"""Coalescing: calls that arrive while one batch is in flight go together in the next batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

__all__ = ["Coalescer"]

T = TypeVar("T")

# Sends a batch; one outcome per item, in order: None for success, the item's exception.
SendBatch = Callable[[list[T]], Awaitable[Sequence[BaseException | None]]]


@dataclass(slots=True)
class _Waiting(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = None


class Coalescer(Generic[T]):
    """One batch in flight at a time; whoever holds the lock sends everything queued so far.

    A broker client reached through a thread (or another event loop) pays a crossing per call;
    concurrent publishers then queue for crossings one at a time. Batching them keeps one
    crossing per round trip, whatever the number of callers."""

    def __init__(self, send: SendBatch[T]) -> None:
        self._send = send
        self._queued: list[_Waiting[T]] = []
        self._lock = trio.Lock()

    async def submit(self, item: T) -> None:
        """Return once `item` was sent; raise its own error if it failed."""
        waiting = _Waiting(item)
        self._queued.append(waiting)
        try:
            async with self._lock:
                if not waiting.done:
                    await self._flush()
        except BaseException:
            if not waiting.done and waiting in self._queued:
                self._queued.remove(waiting)  # never sent: its caller gave up on it
            raise
        if waiting.error is not None:
            raise waiting.error

    async def _flush(self) -> None:
        batch, self._queued = self._queued, []
        outcomes: Sequence[BaseException | None]
        with trio.CancelScope(shield=True):  # the batch belongs to other callers too
            try:
                outcomes = await self._send([w.item for w in batch])
            except Exception as exc:
                outcomes = [exc] * len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.error = outcome
            waiting.done = True
