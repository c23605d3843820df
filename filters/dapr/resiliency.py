"""Dapr Resiliency for invocation: per-attempt timeout, retries, a circuit breaker per app."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

import trio

from config.dapr.resiliency import CircuitBreakerPolicy, RetryPolicy
from config.dapr.resolve import ResolvedAppPolicy
from config.dapr.trip import Counts
from proxy.http.errors import DaprApiError, ProxyError
from proxy.http.model import Response

Attempt = Callable[[], Awaitable[Response]]

# Dapr's exponential back-off (cenkalti/backoff): first interval, multiplier, randomisation.
EXPONENTIAL_INITIAL = 0.5
EXPONENTIAL_MULTIPLIER = 1.5
EXPONENTIAL_JITTER = 0.5


class CircuitOpen(ProxyError):
    status = 500
    flag = "UO"
    code = "circuit_breaker_open"


class CircuitBreaker:
    """sony/gobreaker's state machine, as Dapr uses it: closed → open when `trip` holds,
    open → half-open after `timeout`, half-open lets `max_requests` through and closes after
    that many successes, reopens on any failure. `interval` resets closed-state counts."""

    def __init__(self, policy: CircuitBreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self.state = "closed"
        self.counts = Counts()
        self._opened_at = 0.0
        self._window_start = clock()
        self._half_open_in_flight = 0

    def admit(self) -> None:
        """Raise CircuitOpen unless a request may go now."""
        now = self._clock()
        policy = self.policy
        if self.state == "open":
            if now - self._opened_at < policy.timeout:
                raise CircuitOpen("circuit breaker is open")
            self._to("half-open", now)
        if self.state == "half-open":
            if self._half_open_in_flight >= policy.max_requests:
                raise CircuitOpen("too many requests")
            self._half_open_in_flight += 1
        elif policy.interval > 0 and now - self._window_start >= policy.interval:
            self.counts = Counts()
            self._window_start = now
        self.counts = replace(self.counts, requests=self.counts.requests + 1)

    def record(self, ok: bool) -> None:
        c = self.counts
        if ok:
            c = replace(
                c,
                total_successes=c.total_successes + 1,
                consecutive_successes=c.consecutive_successes + 1,
                consecutive_failures=0,
            )
        else:
            c = replace(
                c,
                total_failures=c.total_failures + 1,
                consecutive_failures=c.consecutive_failures + 1,
                consecutive_successes=0,
            )
        self.counts = c
        now = self._clock()
        if self.state == "half-open":
            self._half_open_in_flight = max(0, self._half_open_in_flight - 1)
            if not ok:
                self._to("open", now)
            elif c.consecutive_successes >= self.policy.max_requests:
                self._to("closed", now)
        elif self.state == "closed" and not ok and self.policy.trip(c):
            self._to("open", now)

    def _to(self, state: str, now: float) -> None:
        self.state = state
        self.counts = Counts()
        self._window_start = now
        self._half_open_in_flight = 0
        if state == "open":
            self._opened_at = now


def backoff(policy: RetryPolicy, retry: int, rng: random.Random) -> float:
    """Seconds before retry number `retry` (0-based)."""
    if policy.policy == "constant":
        return policy.duration
    base = EXPONENTIAL_INITIAL * EXPONENTIAL_MULTIPLIER**retry
    jittered = base * rng.uniform(1 - EXPONENTIAL_JITTER, 1 + EXPONENTIAL_JITTER)
    return min(jittered, policy.max_interval)


class AppResilience:
    """The resolved policy for one target app, and its breaker."""

    def __init__(
        self,
        app_id: str,
        policy: ResolvedAppPolicy,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self.app_id = app_id
        self.policy = policy
        self.breaker = (
            CircuitBreaker(policy.circuit_breaker, clock) if policy.circuit_breaker else None
        )
        self._rng = rng or random.Random()

    async def run(self, attempt: Attempt, replayable: bool) -> Response:
        """Attempts under the timeout, retried as the policy says; a streamed body is sent once."""
        policy = self.policy
        retry = policy.retry if not policy.builtin else None
        retries = 0
        while True:
            failure: ProxyError | None = None
            response: Response | None = None
            try:
                response = await self._one(attempt)
            except ProxyError as exc:
                failure = exc
            if response is not None and not self._failed(response, retry):
                return response
            can_retry = (
                retry is not None
                and replayable
                and (retry.max_retries < 0 or retries < retry.max_retries)
            )
            if not can_retry or retry is None:
                if failure is not None:
                    raise failure
                assert response is not None
                return response
            if response is not None:
                await response.body.aclose()
            await trio.sleep(backoff(retry, retries, self._rng))
            retries += 1

    async def _one(self, attempt: Attempt) -> Response:
        breaker = self.breaker
        if breaker is not None:
            try:
                breaker.admit()
            except CircuitOpen as exc:
                raise DaprApiError(
                    "ERR_DIRECT_INVOKE",
                    f"failed to invoke, id: {self.app_id}, err: {exc.message}",
                    flag=exc.flag,
                ) from exc
        ok = False
        try:
            timeout = self.policy.timeout
            with trio.fail_after(timeout if timeout else float("inf")):
                response = await attempt()
            ok = response.status < 500
            return response
        except trio.TooSlowError:
            raise DaprApiError(
                "ERR_DIRECT_INVOKE",
                f"failed to invoke, id: {self.app_id}, err: context deadline exceeded",
                flag="UT",
            ) from None
        finally:
            if breaker is not None:
                breaker.record(ok)

    @staticmethod
    def _failed(response: Response, retry: RetryPolicy | None) -> bool:
        """A response counts as a failure to retry: a listed status, or any 5xx by default."""
        if retry is None:
            return False
        if retry.http_status_codes:
            return response.status in retry.http_status_codes
        return response.status >= 500
