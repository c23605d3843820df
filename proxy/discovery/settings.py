"""Strict reading of a name-resolution `configuration` map: typed values, unknown keys refused."""

from __future__ import annotations

from collections.abc import Mapping

from config.base import Duration

__all__ = ["ConfigReader"]


class ConfigReader:
    """Reads one component's configuration; `finish()` rejects every key that was never read.

    Values may be typed YAML or strings, as Dapr's Configuration resources often write them
    ("true", "5", "5s"). Every error is a ValueError that names the component and the key.
    """

    def __init__(self, component: str, configuration: object) -> None:
        self._component = component
        if not isinstance(configuration, Mapping):
            raise ValueError(f"nameResolution {component}: configuration must be a mapping")
        self._values: Mapping[object, object] = configuration
        self._read: set[str] = set()

    def error(self, key: str, reason: str) -> ValueError:
        return ValueError(f"nameResolution {self._component}: configuration key {key!r}: {reason}")

    def _take(self, key: str) -> object | None:
        self._read.add(key)
        return self._values.get(key)

    def string(self, key: str, default: str) -> str:
        value = self._take(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def duration(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        """Seconds; "5s", "250ms", "1h" or a bare number of seconds (Dapr reads integers so)."""
        value = self._take(key)
        if value is None:
            return default
        try:
            seconds = float(Duration.parse(value))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if seconds < minimum:
            raise self.error(key, f"must be at least {minimum:g}s, got {value!r}")
        return seconds

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"expected an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.error(key, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.error(key, f"expected true or false, got {value!r}")

    def string_list(self, key: str) -> list[str]:
        """A YAML list of strings, or one comma-separated string."""
        value = self._take(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return list(value)

    def mapping(self, key: str) -> Mapping[object, object]:
        value = self._take(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(str(key) for key in self._values if key not in self._read)
        if unknown:
            raise self.error(
                unknown[0],
                f"unknown key (known keys: {', '.join(sorted(self._read))})",
            )
