"""Go's time.ParseDuration, as Dapr resources write durations ("1h30m", "500ms", "1.5s", "0")."""

from __future__ import annotations

import re

__all__ = ["parse_go_duration"]

# Go accepts "µs" spelled with the micro sign (U+00B5) or the Greek mu (U+03BC).
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_HINT = "a Go duration such as 5s, 500ms, 1.5s or 1h30m"


def parse_go_duration(value: object) -> float:
    """Seconds in `value`; ValueError names what was wrong. Negative durations are refused."""
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"expected {_HINT}, got {value!r}")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"a duration must not be negative, got {value!r}")
    text = text.removeprefix("+")
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"expected {_HINT}, got an empty string")
    seconds = 0.0
    position = 0
    while position < len(text):
        part = _PART.match(text, position)
        if part is None:
            unitless = re.fullmatch(r"\d+\.?\d*|\.\d+", text[position:]) is not None
            why = "a number needs a unit (ns, us, ms, s, m, h)" if unitless else f"expected {_HINT}"
            raise ValueError(f"{why}, got {value!r}")
        seconds += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        position = part.end()
    return seconds
