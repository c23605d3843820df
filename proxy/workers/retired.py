"""What workers that died had counted, added to the sums so that a restart never lowers them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

from proxy.workers.group import Slot

T = TypeVar("T")


class Retired(Generic[T]):
    """For one admin endpoint: each worker's last answer, and the counting part of the last
    answers of workers since gone.

    A dead worker's counters would otherwise vanish from the sum, which Prometheus reads as a
    counter reset (and rate() as a burst). What it counted after its last scrape is lost."""

    def __init__(self, counting: Callable[[T], T], combine: Callable[[list[T]], T]) -> None:
        self._counting = counting
        self._combine = combine
        self._last: dict[int, tuple[int, T]] = {}  # slot → (pid, its answer)
        self._total: T | None = None

    def answers(self, slots: Sequence[Slot], fresh: Mapping[int, tuple[int, T]]) -> list[T]:
        """The running workers' answers (slot → (pid, answer)), then the retired total."""
        for slot in slots:
            last = self._last.get(slot.index)
            now = fresh.get(slot.index)
            if last is not None and (now is None or now[0] != last[0]):
                self._retire(last[1])  # that process is gone (restarting, or replaced)
                del self._last[slot.index]
            if now is not None:
                self._last[slot.index] = now
        found = [fresh[index][1] for index in sorted(fresh)]
        return found if self._total is None else [*found, self._total]

    def _retire(self, answer: T) -> None:
        part = self._counting(answer)
        self._total = part if self._total is None else self._combine([self._total, part])
