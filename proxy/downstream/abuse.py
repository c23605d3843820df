"""Sliding one-second counters that catch HTTP/2 abuse: rapid reset, control and empty floods."""

from __future__ import annotations

from collections import deque

from config.schema import Limits


class RateWindow:
    """Counts events in the last second; `hit` says whether the limit is now exceeded."""

    __slots__ = ("_limit", "_times")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._times: deque[float] = deque()

    def hit(self, now: float) -> bool:
        times = self._times
        times.append(now)
        cutoff = now - 1.0
        while times[0] <= cutoff:
            times.popleft()
        return len(times) > self._limit


class AbuseGuard:
    """The per-connection counters; any tripped one means GOAWAY(ENHANCE_YOUR_CALM)."""

    __slots__ = ("control", "empty", "resets", "tripped")

    def __init__(self, limits: Limits) -> None:
        self.resets = RateWindow(limits.max_resets_per_second)  # CVE-2023-44487
        self.control = RateWindow(limits.max_control_frames_per_second)
        self.empty = RateWindow(limits.max_empty_frames)
        self.tripped: str | None = None

    def reset(self, now: float) -> None:
        if self.resets.hit(now):
            self.tripped = "too many stream resets"

    def control_frame(self, now: float) -> None:
        if self.control.hit(now):
            self.tripped = "too many PING/SETTINGS frames"

    def empty_frame(self, now: float) -> None:
        if self.empty.hit(now):
            self.tripped = "too many empty DATA frames"
