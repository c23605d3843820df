"""Dapr `Resiliency` resources: named timeout, retry and circuit-breaker policies, and targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.dapr.fields import Fields, ResourceMeta
from config.dapr.trip import TripPredicate, TripSyntaxError, parse_trip
from config.walk import child, kind

__all__ = [
    "ActorTarget",
    "AppTarget",
    "CircuitBreakerPolicy",
    "ComponentTarget",
    "PolicyNames",
    "Resiliency",
    "RetryPolicy",
    "parse_resiliency",
    "parse_status_codes",
]

BUILT_IN_SERVICE_RETRIES = "DaprBuiltInServiceRetries"
# Dapr's built-in retry policies may be overridden by name, but never below three retries.
BUILT_IN_RETRIES = frozenset(
    {
        BUILT_IN_SERVICE_RETRIES,
        "DaprBuiltInActorRetries",
        "DaprBuiltInActorReminderRetries",
        "DaprBuiltInInitializationRetries",
    }
)
DEFAULT_APP_CB_CACHE_SIZE = 100
DEFAULT_ACTOR_CB_CACHE_SIZE = 5000
HTTP_CODES = (100, 599)
ActorScope = Literal["type", "id", "both"]
_SCOPES: dict[str, ActorScope] = {"type": "type", "id": "id", "both": "both"}
GRPC_CODES = (0, 16)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A retry policy; defaults are Dapr's (constant 5 s, max interval 60 s, retry forever)."""

    policy: Literal["constant", "exponential"] = "constant"
    duration: float = 5.0  # seconds between attempts (constant)
    max_interval: float = 60.0  # cap on the back-off (exponential)
    max_retries: int = -1  # -1 retries forever; 0 never retries
    http_status_codes: frozenset[int] = frozenset()  # empty: every failure is retried
    grpc_status_codes: frozenset[int] = frozenset()

    def retries_http_status(self, status: int) -> bool:
        return not self.http_status_codes or status in self.http_status_codes

    def retries_grpc_status(self, code: int) -> bool:
        return not self.grpc_status_codes or code in self.grpc_status_codes


DEFAULT_TRIP = parse_trip("consecutiveFailures > 5")


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    """A circuit-breaker template; defaults are Dapr's."""

    max_requests: int = 1  # requests let through while half-open
    interval: float = 0.0  # seconds after which closed-state counts reset; 0 never
    timeout: float = 60.0  # seconds open before going half-open
    trip: TripPredicate = DEFAULT_TRIP


@dataclass(frozen=True, slots=True)
class PolicyNames:
    """Names of the policies a target uses; None where it names none."""

    timeout: str | None = None
    retry: str | None = None
    circuit_breaker: str | None = None


@dataclass(frozen=True, slots=True)
class AppTarget:
    timeout: str | None = None
    retry: str | None = None
    circuit_breaker: str | None = None
    circuit_breaker_cache_size: int = DEFAULT_APP_CB_CACHE_SIZE


@dataclass(frozen=True, slots=True)
class ActorTarget:
    timeout: str | None = None
    retry: str | None = None
    circuit_breaker: str | None = None
    circuit_breaker_scope: ActorScope | None = None
    circuit_breaker_cache_size: int = DEFAULT_ACTOR_CB_CACHE_SIZE


@dataclass(frozen=True, slots=True)
class ComponentTarget:
    inbound: PolicyNames = PolicyNames()
    outbound: PolicyNames = PolicyNames()


@dataclass(frozen=True, slots=True)
class Resiliency:
    name: str
    namespace: str
    scopes: tuple[str, ...]
    timeouts: dict[str, float]
    retries: dict[str, RetryPolicy]
    circuit_breakers: dict[str, CircuitBreakerPolicy]
    apps: dict[str, AppTarget]
    actors: dict[str, ActorTarget]
    components: dict[str, ComponentTarget]


def parse_status_codes(text: str, low: int, high: int) -> frozenset[int]:
    """Codes in a list such as "500,502-504"; ValueError says which item is wrong."""
    codes: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        first, dash, last = item.partition("-")
        try:
            start = int(first)
            end = int(last) if dash else start
        except ValueError:
            raise ValueError(f"{item!r} is not a code or a range such as 502-504") from None
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"{item!r} is outside {low}-{high}")
        if start > end:
            raise ValueError(f"{item!r} is an empty range")
        codes.update(range(start, end + 1))
    return frozenset(codes)


def parse_resiliency(spec: dict[str, object], meta: ResourceMeta, fields: Fields) -> Resiliency:
    """The Resiliency in `spec` ($.spec); problems go to `fields`."""
    fields.known_keys(spec, "$.spec", ("policies", "targets"))
    policies = fields.section(spec, "policies", "$.spec")
    where = "$.spec.policies"
    fields.known_keys(policies, where, ("timeouts", "retries", "circuitBreakers"))
    timeouts = {
        name: fields.duration_value(value, child(child(where, "timeouts"), name), 0.0)
        for name, value in fields.section(policies, "timeouts", where).items()
    }
    retries = {
        name: _retry(value, child(child(where, "retries"), name), fields, name)
        for name, value in fields.section(policies, "retries", where).items()
    }
    breakers = {
        name: _breaker(value, child(child(where, "circuitBreakers"), name), fields)
        for name, value in fields.section(policies, "circuitBreakers", where).items()
    }
    known = _Known(set(timeouts), set(retries) | BUILT_IN_RETRIES, set(breakers), fields)
    targets = fields.section(spec, "targets", "$.spec")
    where = "$.spec.targets"
    fields.known_keys(targets, where, ("apps", "actors", "components"))
    apps = {
        name: _app(value, child(child(where, "apps"), name), known)
        for name, value in fields.section(targets, "apps", where).items()
    }
    actors = {
        name: _actor(value, child(child(where, "actors"), name), known)
        for name, value in fields.section(targets, "actors", where).items()
    }
    components = {
        name: _component(value, child(child(where, "components"), name), known)
        for name, value in fields.section(targets, "components", where).items()
    }
    return Resiliency(
        meta.name,
        meta.namespace,
        meta.scopes,
        timeouts,
        retries,
        breakers,
        apps,
        actors,
        components,
    )


def _retry(value: object, path: str, fields: Fields, name: str) -> RetryPolicy:
    raw = fields.as_mapping(value, path)
    fields.known_keys(raw, path, ("policy", "duration", "maxInterval", "maxRetries", "matching"))
    policy: Literal["constant", "exponential"] = "constant"
    if fields.choice(raw, "policy", path, ("constant", "exponential"), "constant") != "constant":
        policy = "exponential"
    max_retries = fields.integer(raw, "maxRetries", path, -1, minimum=-1)
    if name in BUILT_IN_RETRIES and max_retries < 3:
        max_retries = 3  # as daprd: an override of a built-in below 3 (even -1) becomes 3
    matching = fields.section(raw, "matching", path)
    fields.known_keys(matching, child(path, "matching"), ("httpStatusCodes", "gRPCStatusCodes"))
    return RetryPolicy(
        policy=policy,
        duration=fields.duration(raw, "duration", path, 5.0),
        max_interval=fields.duration(raw, "maxInterval", path, 60.0),
        max_retries=max_retries,
        http_status_codes=_codes(matching, "httpStatusCodes", path, fields, HTTP_CODES),
        grpc_status_codes=_codes(matching, "gRPCStatusCodes", path, fields, GRPC_CODES),
    )


def _codes(
    matching: dict[str, object], key: str, path: str, fields: Fields, bounds: tuple[int, int]
) -> frozenset[int]:
    where = child(child(path, "matching"), key)
    value = matching.get(key)
    if value is None:
        return frozenset()
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        fields.report(
            where, f"expected a comma-separated list such as 500,502-504, got {kind(value)}"
        )
        return frozenset()
    try:
        return parse_status_codes(value, *bounds)
    except ValueError as exc:
        fields.report(where, str(exc))
        return frozenset()


def _breaker(value: object, path: str, fields: Fields) -> CircuitBreakerPolicy:
    raw = fields.as_mapping(value, path)
    fields.known_keys(raw, path, ("maxRequests", "interval", "timeout", "trip"))
    trip = DEFAULT_TRIP
    source = fields.text(raw, "trip", path)
    if source:
        try:
            trip = parse_trip(source)
        except TripSyntaxError as exc:
            fields.report(child(path, "trip"), str(exc))
    return CircuitBreakerPolicy(
        max_requests=fields.integer(raw, "maxRequests", path, 1, minimum=0) or 1,
        interval=fields.duration(raw, "interval", path, 0.0),
        timeout=fields.duration(raw, "timeout", path, 60.0),
        trip=trip,
    )


@dataclass
class _Known:
    """Policy names a target may use; naming another is a problem."""

    timeouts: set[str]
    retries: set[str]
    breakers: set[str]
    fields: Fields

    def names(self, raw: dict[str, object], path: str) -> PolicyNames:
        return PolicyNames(
            self._name(raw, "timeout", path, self.timeouts, "timeouts"),
            self._name(raw, "retry", path, self.retries, "retries"),
            self._name(raw, "circuitBreaker", path, self.breakers, "circuitBreakers"),
        )

    def _name(
        self, raw: dict[str, object], key: str, path: str, names: set[str], kind: str
    ) -> str | None:
        name = self.fields.text(raw, key, path)
        if not name:
            return None
        if name not in names:
            self.fields.report(child(path, key), f"no {kind} policy named {name!r}")
        return name


def _app(value: object, path: str, known: _Known) -> AppTarget:
    raw = known.fields.as_mapping(value, path)
    keys = ("timeout", "retry", "circuitBreaker", "circuitBreakerCacheSize")
    known.fields.known_keys(raw, path, keys)
    names = known.names(raw, path)
    size = known.fields.integer(raw, "circuitBreakerCacheSize", path, 0, minimum=0)
    return AppTarget(
        names.timeout, names.retry, names.circuit_breaker, size or DEFAULT_APP_CB_CACHE_SIZE
    )


def _actor(value: object, path: str, known: _Known) -> ActorTarget:
    fields = known.fields
    raw = fields.as_mapping(value, path)
    keys = ("timeout", "retry", "circuitBreaker", "circuitBreakerScope", "circuitBreakerCacheSize")
    fields.known_keys(raw, path, keys)
    names = known.names(raw, path)
    chosen = fields.choice(raw, "circuitBreakerScope", path, tuple(_SCOPES), "")
    scope = _SCOPES.get(chosen)
    if names.circuit_breaker and scope is None and "circuitBreakerScope" not in raw:
        fields.report(
            child(path, "circuitBreakerScope"),
            "an actor circuit breaker needs a scope: type, id or both",
        )
    size = fields.integer(raw, "circuitBreakerCacheSize", path, 0, minimum=0)
    return ActorTarget(
        names.timeout,
        names.retry,
        names.circuit_breaker,
        scope,
        size or DEFAULT_ACTOR_CB_CACHE_SIZE,
    )


def _component(value: object, path: str, known: _Known) -> ComponentTarget:
    raw = known.fields.as_mapping(value, path)
    known.fields.known_keys(raw, path, ("inbound", "outbound"))
    directions = []
    for direction in ("inbound", "outbound"):
        where = child(path, direction)
        section = known.fields.section(raw, direction, path)
        known.fields.known_keys(section, where, ("timeout", "retry", "circuitBreaker"))
        directions.append(known.names(section, where))
    return ComponentTarget(inbound=directions[0], outbound=directions[1])
