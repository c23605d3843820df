"""Pure retry decisions: what `retry_on` covers, Envoy's jittered back-off, the retry budget."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from config import schema
from proxy.http.errors import (
    ProxyError,
    UpstreamConnectFailure,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from proxy.http.model import Header
from proxy.upstream.outgoing import RetryableReset

MAX_RETRIES_HEADER = b"x-envoy-max-retries"
ATTEMPT_COUNT_HEADER = b"x-envoy-attempt-count"

_GATEWAY = frozenset({502, 503, 504})
# Envoy counts a reset (no response at all) as a 5xx, since it ends as one.
_ON_RESET = frozenset({"5xx", "gateway-error", "reset"})
_ON_CONNECT_FAILURE = _ON_RESET | {"connect-failure"}
_ON_REFUSED = _ON_RESET | {"refused-stream"}
# Beyond ~2**60 the exponential is far past any cap; stop doubling so the float stays finite.
_MAX_EXPONENT = 60


class PerTryTimeout(UpstreamTimeout):
    """One attempt got no response headers within `per_try_timeout` (Envoy: UT)."""

    code = "upstream_per_try_timeout"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The frozen decision table of one retry filter."""

    retry_on: frozenset[str]
    retriable_status_codes: frozenset[int]
    num_retries: int
    per_try_timeout: float  # seconds, 0: none
    base_interval: float
    max_interval: float

    @classmethod
    def from_config(cls, cfg: schema.RetryFilter) -> RetryPolicy:
        base = float(cfg.base_interval)
        cap = float(cfg.max_interval) if cfg.max_interval is not None else 10 * base
        return cls(
            retry_on=frozenset(cfg.retry_on),
            retriable_status_codes=frozenset(cfg.retriable_status_codes),
            num_retries=cfg.num_retries,
            per_try_timeout=float(cfg.per_try_timeout),
            base_interval=base,
            max_interval=cap,
        )

    def retry_status(self, status: int) -> bool:
        """True when a response with `status` is one `retry_on` asks to retry."""
        on = self.retry_on
        return (
            ("5xx" in on and 500 <= status <= 599)
            or ("gateway-error" in on and status in _GATEWAY)
            or ("retriable-4xx" in on and status == 409)
            or ("retriable-status-codes" in on and status in self.retriable_status_codes)
        )

    def retry_error(self, error: ProxyError) -> bool:
        """True when an attempt that failed with `error` (no response) may be retried."""
        return not self.retry_on.isdisjoint(_conditions(error))

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return backoff(retry, self.base_interval, self.max_interval, random)


def _conditions(error: ProxyError) -> Collection[str]:
    """The retry_on values under which Envoy retries a request that failed with `error`."""
    if isinstance(error, UpstreamConnectFailure):
        return _ON_CONNECT_FAILURE
    if isinstance(error, RetryableReset):  # REFUSED_STREAM, GOAWAY, or a stale keep-alive
        return _ON_REFUSED
    if isinstance(error, PerTryTimeout):
        return _ON_RESET
    if isinstance(error, UpstreamTimeout):
        # The route timeout bounds the whole request in Envoy: never retried.
        return ()
    if isinstance(error, UpstreamReset | UpstreamProtocolError):
        return _ON_RESET
    # Overflow (UO), no healthy upstream, no route, no cluster, client errors: never retried.
    return ()


def backoff(retry: int, base: float, cap: float, random: Callable[[], float]) -> float:
    """Envoy's fully jittered exponential back-off: uniform in [0, min((2**retry - 1) * base, cap)).

    `random` returns a float in [0, 1), e.g. `random.random`.
    """
    exponent = min(max(retry, 1), _MAX_EXPONENT)
    upper = min(((1 << exponent) - 1) * base, cap)
    return random() * upper


def max_retries_override(headers: Iterable[Header]) -> int | None:
    """The x-envoy-max-retries value when it is a non-negative integer, else None."""
    for name, value in headers:
        if name == MAX_RETRIES_HEADER:
            text = value.strip()
            if text.isdigit():
                return int(text)
            return None
    return None


class RetryBudget:
    """Envoy's retry budget: concurrent retries stay below
    max(min_concurrency, percent % of the requests in flight); `percent` None means no limit."""

    __slots__ = ("active", "min_concurrency", "percent", "retrying")

    def __init__(self, percent: float | None, min_concurrency: int = 3) -> None:
        self.percent = percent
        self.min_concurrency = min_concurrency
        self.active = 0  # requests in flight through the filter
        self.retrying = 0  # retries between their decision and their attempt's end

    @classmethod
    def from_config(cls, cfg: schema.RetryBudget | None) -> RetryBudget:
        if cfg is None:
            return cls(None)
        return cls(cfg.budget_percent, cfg.min_retry_concurrency)

    def allows(self) -> bool:
        """True when one more concurrent retry fits."""
        if self.percent is None:
            return True
        limit = max(float(self.min_concurrency), self.percent / 100.0 * self.active)
        return self.retrying < limit
