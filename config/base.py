"""Config building blocks every schema module shares: durations, frozen structs, addresses."""

from __future__ import annotations

import math

import msgspec


class Duration(float):
    """Seconds; YAML may say 15, 2.5, "15s", "250ms", "2m" or "1h"."""

    _UNITS = (("ms", 0.001), ("us", 0.000001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration such as 15s or 250ms, got {value!r}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = cls._parse_text(value.strip())
        else:
            raise ValueError(f"expected a duration such as 15s or 250ms, got {value!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a duration must be finite and not negative, got {value!r}")
        return cls(seconds)

    @classmethod
    def _parse_text(cls, text: str) -> float:
        for suffix, scale in cls._UNITS:
            if text.endswith(suffix):
                number = text[: -len(suffix)]
                try:
                    return float(number) * scale
                except ValueError:
                    break
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a duration such as 15s or 250ms, got {text!r}") from None


class Frozen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


def parse_address(text: str) -> tuple[str, int]:
    """Split "host:port" / "[v6]:port"; ValueError with a reason when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be a number in {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, number
