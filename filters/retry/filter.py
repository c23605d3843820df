"""Retry filter: sends a request again on the failures `retry_on` names, as Envoy's router does."""

from __future__ import annotations

import random as _random
from collections.abc import Callable

import trio

from config import schema
from filters.retry.policy import (
    ATTEMPT_COUNT_HEADER,
    MAX_RETRIES_HEADER,
    PerTryTimeout,
    RetryBudget,
    RetryPolicy,
    max_retries_override,
)
from filters.retry.replay import Replay
from proxy.chain import Handler
from proxy.http.errors import ProxyError
from proxy.http.model import Request, Response
from proxy.stats import RetryStats


class RetryFilter:
    """Retries on the request's status and headers only: once a response is returned, its body
    streams downstream and nothing about it is retried."""

    def __init__(
        self,
        policy: RetryPolicy,
        budget: RetryBudget,
        stats: RetryStats,
        *,
        include_attempt_count: bool = False,
        respect_request_headers: bool = False,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.stats = stats
        self._attempt_count = include_attempt_count
        self._respect_headers = respect_request_headers
        self._random = random

    @classmethod
    def from_config(cls, cfg: schema.RetryFilter, stats: RetryStats) -> RetryFilter:
        return cls(
            RetryPolicy.from_config(cfg),
            RetryBudget.from_config(cfg.retry_budget),
            stats,
            include_attempt_count=cfg.include_attempt_count,
            respect_request_headers=cfg.respect_request_headers,
        )

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        num_retries = self.policy.num_retries
        if self._respect_headers:
            override = max_retries_override(request.headers)
            if override is not None:
                num_retries = override
            # Consumed here, as Envoy's router consumes it: the upstream never sees it.
            request.headers = [h for h in request.headers if h[0] != MAX_RETRIES_HEADER]
        replay = await Replay.prepare(request.body)
        self.budget.active += 1
        try:
            return await self._attempts(request, next, replay, num_retries)
        finally:
            self.budget.active -= 1

    async def _attempts(
        self, request: Request, next: Handler, replay: Replay, num_retries: int
    ) -> Response:
        # Filters below (the router's rewrites) edit the request in place: each attempt starts
        # from the request as it reached this filter.
        target, authority = request.target, request.authority
        headers = [h for h in request.headers if h[0] != ATTEMPT_COUNT_HEADER]
        policy, stats, budget = self.policy, self.stats, self.budget
        retries = 0
        holding = False  # a budget slot, from the retry decision to the end of its attempt
        try:
            while True:
                request.target, request.authority = target, authority
                request.headers = list(headers)
                if self._attempt_count:
                    request.headers.append((ATTEMPT_COUNT_HEADER, str(retries + 1).encode()))
                request.body = replay.body()
                error: ProxyError | None = None
                response: Response | None = None
                try:
                    response = await self._attempt(request, next)
                except ProxyError as exc:
                    error = exc
                if holding:
                    budget.retrying -= 1
                    holding = False
                if response is not None:
                    retriable = policy.retry_status(response.status)
                else:
                    assert error is not None
                    retriable = policy.retry_error(error)
                if not retriable:
                    if retries:
                        stats.rq_retry_success.inc()
                    return _outcome(response, error)
                if retries >= num_retries:
                    stats.rq_retry_limit_exceeded.inc()
                    request.info.add_flag("URX")
                    return _outcome(response, error)
                if not replay.allows(error):
                    return _outcome(response, error)
                if not budget.allows():
                    stats.rq_retry_overflow.inc()
                    return _outcome(response, error)
                if response is not None:
                    await response.body.aclose()
                retries += 1
                stats.rq_retry.inc()
                budget.retrying += 1
                holding = True
                await trio.sleep(policy.backoff(retries, self._random))
        finally:
            if holding:
                budget.retrying -= 1

    async def _attempt(self, request: Request, next: Handler) -> Response:
        timeout = self.policy.per_try_timeout
        if timeout <= 0:
            return await next(request)
        # Bounds the wait for response headers only; the body then streams under the route's
        # own deadline, as Envoy's per_try_timeout stops once headers flow downstream.
        with trio.move_on_after(timeout):
            return await next(request)
        raise PerTryTimeout(f"no response headers within the per-try timeout of {timeout:g}s")


def _outcome(response: Response | None, error: ProxyError | None) -> Response:
    """The last attempt's response, or its error raised again (its flag kept)."""
    if response is not None:
        return response
    assert error is not None
    raise error
