"""Connections waiting for a request, oldest first: overload shortens their waits or closes them."""

from __future__ import annotations

import math
from collections import OrderedDict

import trio

from proxy.stats import Gauge

# Envoy's reduce_timeouts overload action: past the listener's overload_threshold, a new wait
# for a request gets less of its timeout, falling linearly to this share at max_connections.
MIN_SCALE = 0.1


class IdleConnections:
    """One per listener. A wait for a request's first bytes (on a new connection or between
    keep-alive requests) runs in a scope opened here; at max_connections the listener cancels
    the oldest wait, which closes that connection, to admit a new one."""

    __slots__ = ("_active", "_cap", "_from", "_waiting")

    def __init__(self, max_connections: int, threshold: float, active: Gauge) -> None:
        self._active = active
        self._cap = max_connections
        self._from = max_connections * threshold
        # Insertion order is age order: the first entry has waited longest.
        self._waiting: OrderedDict[trio.CancelScope, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def scale(self) -> float:
        """1 up to the overload threshold, then down linearly to MIN_SCALE at the cap."""
        over = self._active.value - self._from
        if over <= 0:
            return 1.0
        return 1.0 - min(1.0, over / max(1.0, self._cap - self._from)) * (1.0 - MIN_SCALE)

    def open(self, timeout: float) -> trio.CancelScope:
        """A scope for one wait of at most `timeout` seconds (0: unlimited), scaled under load."""
        scope = trio.CancelScope(deadline=self.deadline(timeout))
        self._waiting[scope] = None
        return scope

    def deadline(self, timeout: float) -> float:
        """When a wait of at most `timeout` seconds (0: unlimited) starting now ends, scaled
        under load."""
        if timeout <= 0:
            return math.inf
        if self._active.value > self._from:
            timeout *= self.scale()
        return trio.current_time() + timeout

    def watch(self, scope: trio.CancelScope) -> None:
        """Make a codec's own scope (one whose deadline it moves) a wait that eviction may end."""
        self._waiting[scope] = None

    def close(self, scope: trio.CancelScope) -> None:
        """The wait is over (bytes came, it timed out, or it was evicted)."""
        self._waiting.pop(scope, None)

    def evict(self) -> bool:
        """Cancel the longest wait, so its connection closes; False when none is waiting."""
        if not self._waiting:
            return False
        scope, _ = self._waiting.popitem(last=False)
        scope.cancel()
        return True

    def cancel_all(self) -> None:
        """End every wait (the server is draining: idle connections have nothing to finish)."""
        while self._waiting:
            self._waiting.popitem()[0].cancel()
