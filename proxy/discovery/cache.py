"""A small TTL cache of resolver answers, keyed by (app id, namespace), on an injected clock."""

from __future__ import annotations

from collections.abc import Callable

from proxy.discovery.base import Instance

__all__ = ["AnswerCache"]

_Key = tuple[str, str]


class AnswerCache:
    """Answers (empty ones too) kept for their TTL, so a request does not cost a lookup.

    The size is bounded: callers choose the app id, and a flood of made-up ids must not grow
    memory. A clock that steps backwards makes entries stale rather than immortal.
    """

    def __init__(self, clock: Callable[[], float], *, limit: int = 1024) -> None:
        self._clock = clock
        self._limit = limit
        self._entries: dict[_Key, tuple[float, float, tuple[Instance, ...]]] = {}

    def get(self, key: _Key) -> list[Instance] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, expires_at, instances = entry
        if not stored_at <= self._clock() < expires_at:
            del self._entries[key]
            return None
        return list(instances)

    def put(self, key: _Key, instances: list[Instance] | tuple[Instance, ...], ttl: float) -> None:
        now = self._clock()
        if key not in self._entries and len(self._entries) >= self._limit:
            self._entries = {k: v for k, v in self._entries.items() if v[0] <= now < v[1]}
            if len(self._entries) >= self._limit:
                self._entries.clear()
        self._entries[key] = (now, now + ttl, tuple(instances))

    def forget(self, key: _Key) -> None:
        self._entries.pop(key, None)
