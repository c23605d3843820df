"""Which resiliency policies apply to calls to one app, by Dapr's precedence rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from config.dapr.resiliency import (
    BUILT_IN_SERVICE_RETRIES,
    AppTarget,
    CircuitBreakerPolicy,
    ComponentTarget,
    Resiliency,
    RetryPolicy,
)

__all__ = [
    "BUILT_IN_SERVICE_RETRY",
    "ResolvedAppPolicy",
    "ResolvedComponentPolicy",
    "resolve_app_policy",
    "resolve_component_policy",
]

# daprd's DaprBuiltInServiceRetries: constant back-off, 1 s apart, 3 retries.
BUILT_IN_SERVICE_RETRY = RetryPolicy(policy="constant", duration=1.0, max_retries=3)


@dataclass(frozen=True, slots=True)
class ResolvedAppPolicy:
    """The policies for service invocation of one app.

    `retry` is the user's policy (named target, else the App/general default), or the built-in
    DaprBuiltInServiceRetries when there is none; `builtin` says it is the built-in one, which
    daprd uses only for connection failures (gRPC Unavailable/Unauthenticated). As in daprd,
    the built-in connection retries stay on whenever no *named* target covers the app, even
    when a default policy supplies `retry`; `connection_retry` is then that built-in policy.
    """

    timeout: float | None
    retry: RetryPolicy | None
    circuit_breaker: CircuitBreakerPolicy | None
    builtin: bool
    connection_retry: RetryPolicy | None = None
    circuit_breaker_cache_size: int = 100


@dataclass
class _Merged:
    timeouts: dict[str, float]
    retries: dict[str, RetryPolicy]
    breakers: dict[str, CircuitBreakerPolicy]
    apps: dict[str, AppTarget]


def _merge(resiliencies: Sequence[Resiliency]) -> _Merged:
    """One view of every resource; a later resource's same-named entry replaces an earlier one."""
    merged = _Merged({}, {}, {}, {})
    for resiliency in resiliencies:
        merged.timeouts.update(resiliency.timeouts)
        merged.retries.update(resiliency.retries)
        merged.breakers.update(resiliency.circuit_breakers)
        merged.apps.update(resiliency.apps)
    return merged


_T = TypeVar("_T")


def _first(table: dict[str, _T], *names: str) -> _T | None:
    for name in names:
        if name in table:
            return table[name]
    return None


def resolve_app_policy(resiliencies: Sequence[Resiliency], app_id: str) -> ResolvedAppPolicy:
    """Named target > Default{App}…Policy > Default…Policy > the built-in service retries."""
    merged = _merge(resiliencies)
    builtin_retry = merged.retries.get(BUILT_IN_SERVICE_RETRIES, BUILT_IN_SERVICE_RETRY)
    target = merged.apps.get(app_id)
    if target is not None:
        # A named target replaces the defaults entirely: what it does not name, it does not get.
        return ResolvedAppPolicy(
            timeout=merged.timeouts.get(target.timeout) if target.timeout else None,
            retry=merged.retries.get(target.retry) if target.retry else None,
            circuit_breaker=(
                merged.breakers.get(target.circuit_breaker) if target.circuit_breaker else None
            ),
            builtin=False,
            circuit_breaker_cache_size=target.circuit_breaker_cache_size,
        )
    timeout = _first(merged.timeouts, "DefaultAppTimeoutPolicy", "DefaultTimeoutPolicy")
    retry = _first(merged.retries, "DefaultAppRetryPolicy", "DefaultRetryPolicy")
    breaker = _first(
        merged.breakers, "DefaultAppCircuitBreakerPolicy", "DefaultCircuitBreakerPolicy"
    )
    return ResolvedAppPolicy(
        timeout=timeout,
        retry=retry if retry is not None else builtin_retry,
        circuit_breaker=breaker,
        builtin=retry is None,
        connection_retry=builtin_retry,
    )


@dataclass(frozen=True, slots=True)
class ResolvedComponentPolicy:
    """The policies for one direction of one component (pub/sub deliveries are `inbound`)."""

    timeout: float | None = None
    retry: RetryPolicy | None = None
    circuit_breaker: CircuitBreakerPolicy | None = None


def resolve_component_policy(
    resiliencies: Sequence[Resiliency], component: str, direction: Literal["inbound", "outbound"]
) -> ResolvedComponentPolicy:
    """Named target > DefaultComponent{Inbound|Outbound}…Policy > DefaultComponent…Policy >
    Default…Policy; none at all: no retries here (the broker's redelivery applies)."""
    merged = _merge(resiliencies)
    targets: dict[str, ComponentTarget] = {}
    for resiliency in resiliencies:
        targets.update(resiliency.components)
    target = targets.get(component)
    if target is not None:
        names = target.inbound if direction == "inbound" else target.outbound
        return ResolvedComponentPolicy(
            timeout=merged.timeouts.get(names.timeout) if names.timeout else None,
            retry=merged.retries.get(names.retry) if names.retry else None,
            circuit_breaker=merged.breakers.get(names.circuit_breaker)
            if names.circuit_breaker
            else None,
        )
    way = direction.capitalize()
    return ResolvedComponentPolicy(
        timeout=_first(
            merged.timeouts,
            f"DefaultComponent{way}TimeoutPolicy",
            "DefaultComponentTimeoutPolicy",
            "DefaultTimeoutPolicy",
        ),
        retry=_first(
            merged.retries,
            f"DefaultComponent{way}RetryPolicy",
            "DefaultComponentRetryPolicy",
            "DefaultRetryPolicy",
        ),
        circuit_breaker=_first(
            merged.breakers,
            f"DefaultComponent{way}CircuitBreakerPolicy",
            "DefaultComponentCircuitBreakerPolicy",
            "DefaultCircuitBreakerPolicy",
        ),
    )
