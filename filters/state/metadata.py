"""Typed reads of a Dapr Component's metadata, shared by the state stores and the brokers."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from config.dapr.component import Component
from config.dapr.duration import parse_go_duration
from filters.state.store import StateError


class ComponentMetadata:
    """Typed reads of a Component's metadata; daprd matches names case-insensitively."""

    def __init__(
        self,
        component: Component,
        *,
        error: Callable[[str], Exception] = StateError,
        kind: str = "state store",
    ) -> None:
        self._name = component.name
        self._values: Mapping[str, str] = {k.lower(): v for k, v in component.metadata.items()}
        self._error = error
        self._kind = kind

    def error(self, key: str, reason: str) -> Exception:
        return self._error(f"{self._kind} {self._name}: metadata {key}: {reason}")

    def text(self, key: str, default: str) -> str:
        return self._values.get(key.lower(), default).strip() or default

    def flag(self, key: str) -> bool:
        value = self.text(key, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value in ("true", "1")

    def integer(self, key: str, default: int | None) -> int | None:
        value = self.text(key, "")
        if not value:
            return default
        try:
            return int(value)
        except ValueError:
            raise self.error(key, f"expected an integer, got {value!r}") from None

    def duration(self, key: str, default: float) -> float:
        """Seconds: a Go duration ("5s", "500ms") or a bare number of seconds."""
        found = self.optional_duration(key)
        return default if found is None else found

    def optional_duration(self, key: str, *, negative_ok: bool = False) -> float | None:
        """`duration` without a default (None when unset); `negative_ok` lets a bare negative
        number through (Dapr reads "-1" as "off" for some intervals)."""
        value = self.text(key, "")
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if seconds >= 0 or negative_ok:
                return seconds
        try:
            return parse_go_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
