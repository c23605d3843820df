"""The data plane's metric instruments: plain objects bumped per request, read when collected."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import TypeVar

from opentelemetry.util.types import AttributeValue

from exporters import names

# One value per attribute name of the instrument, in its order; None leaves the attribute out.
# Callers build it from values they already hold (interned strings, ints): no dict per record.
Key = tuple[AttributeValue | None, ...]
T = TypeVar("T")


def attributes_of(keys: Sequence[str], key: Key) -> dict[str, AttributeValue]:
    """The attribute set a key stands for, in the instrument's order (done once per series)."""
    return {name: value for name, value in zip(keys, key, strict=True) if value is not None}


def _values(series: dict[Key, T]) -> tuple[T, ...]:
    """The dict's values, copied in C under the GIL; if a garbage collection during the copy
    ran Python code that let the trio thread add a series, the copy fails and is taken again."""
    while True:
        try:
            return tuple(series.values())
        except RuntimeError:  # dictionary changed size during iteration
            continue


class HistogramSeries:
    """One attribute set's bucket counts, sum, min and max since it was first recorded."""

    __slots__ = ("attributes", "counts", "max", "min", "start_ns", "total")

    def __init__(self, attributes: dict[str, AttributeValue], buckets: int) -> None:
        self.attributes = attributes
        self.counts = [0] * buckets
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = time.time_ns()


class Histogram:
    """An explicit-bucket histogram, cumulative, with the SDK's bucket rule (a value on a
    boundary counts in the bucket that boundary closes).

    `record` is the whole hot-path cost: one dict look-up on a tuple, a bisect and four updates.
    Values are durations from a monotonic clock, never negative (the SDK would drop those).
    Recorded on the trio thread only; a collector on another thread takes `snapshot()`.
    """

    __slots__ = ("bounds", "description", "keys", "name", "series", "unit")

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        keys: tuple[str, ...],
        bounds: Sequence[float],
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.keys = keys
        self.bounds = tuple(bounds)
        self.series: dict[Key, HistogramSeries] = {}

    def record(self, key: Key, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = HistogramSeries(
                attributes_of(self.keys, key), len(self.bounds) + 1
            )
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value
        if value < series.min:
            series.min = value
        if value > series.max:
            series.max = value

    def key(self, attributes: Mapping[str, AttributeValue]) -> Key:
        """The key for an attribute mapping (tests, cold paths); other attributes are ignored."""
        return tuple(attributes.get(name) for name in self.keys)

    def snapshot(self) -> tuple[HistogramSeries, ...]:
        """Every series so far, safe to take from another thread (see `_values`)."""
        return _values(self.series)


class CounterSeries:
    """One attribute set's count since it was first added to."""

    __slots__ = ("attributes", "start_ns", "value")

    def __init__(self, attributes: dict[str, AttributeValue]) -> None:
        self.attributes = attributes
        self.value = 0
        self.start_ns = time.time_ns()


class Counter:
    """A monotonic counter per attribute set; `add` is a dict look-up and an increment."""

    __slots__ = ("description", "keys", "name", "series", "unit")

    def __init__(self, name: str, unit: str, description: str, keys: tuple[str, ...]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.keys = keys
        self.series: dict[Key, CounterSeries] = {}

    def add(self, key: Key, amount: int = 1) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = CounterSeries(attributes_of(self.keys, key))
        series.value += amount

    def snapshot(self) -> tuple[CounterSeries, ...]:
        """Every series so far, safe to take from another thread (see `_values`)."""
        return _values(self.series)


# The attribute names, in the order the keys list them (and the order they are exported in).
SERVER_KEYS = (
    names.HTTP_REQUEST_METHOD,
    names.URL_SCHEME,
    names.HTTP_RESPONSE_STATUS_CODE,
    names.NETWORK_PROTOCOL_VERSION,
    names.HTTP_ROUTE,
    names.ERROR_TYPE,
)
CLIENT_KEYS = (
    names.HTTP_REQUEST_METHOD,
    names.SERVER_ADDRESS,
    names.SERVER_PORT,
    names.HTTP_RESPONSE_STATUS_CODE,
    names.ERROR_TYPE,
)
FLAG_KEYS = (names.RESPONSE_FLAGS_ATTR,)


class Instruments:
    """The metric instruments the data plane records into, created once per Telemetry."""

    __slots__ = ("client_duration", "response_flags", "server_duration")

    def __init__(self) -> None:
        self.server_duration = Histogram(
            names.HTTP_SERVER_DURATION,
            "s",
            "Duration of HTTP server requests (downstream), until the response ended.",
            SERVER_KEYS,
            names.DURATION_BUCKETS,
        )
        self.response_flags = Counter(
            names.RESPONSE_FLAGS,
            "{response}",
            "Responses that carry an Envoy-style response flag, by flag.",
            FLAG_KEYS,
        )
        self.client_duration = Histogram(
            names.HTTP_CLIENT_DURATION,
            "s",
            "Duration of HTTP client requests (one upstream attempt each).",
            CLIENT_KEYS,
            names.DURATION_BUCKETS,
        )

    def all(self) -> tuple[Histogram | Counter, ...]:
        """In the order they are exported."""
        return (self.server_duration, self.response_flags, self.client_duration)
