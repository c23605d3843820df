"""Dapr Resiliency resources: policies, defaults, trip predicates, targets and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.dapr.errors import DaprResourceError
from config.dapr.resiliency import (
    ActorTarget,
    AppTarget,
    CircuitBreakerPolicy,
    ComponentTarget,
    PolicyNames,
    Resiliency,
    RetryPolicy,
    parse_status_codes,
)
from config.dapr.resolve import BUILT_IN_SERVICE_RETRY, ResolvedAppPolicy, resolve_app_policy
from config.dapr.resources import load_resources
from config.dapr.trip import Counts, TripSyntaxError, parse_trip

# The reference's §7.3 example, verbatim.
REFERENCE = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: myresiliency}
scopes: [app1]
spec:
  policies:
    timeouts: {general: 5s, important: 60s}                    # Go durations
    retries:
      retryForever: {policy: exponential, maxInterval: 15s, maxRetries: -1}
      pubsubRetry:  {policy: constant, duration: 5s, maxRetries: 10}
      onlyServerErrors: {policy: constant, duration: 1s, maxRetries: 3,
                         matching: {httpStatusCodes: "500,502-504", gRPCStatusCodes: "1-4,8-11,13,14"}}
    circuitBreakers:
      simpleCB: {maxRequests: 1, interval: 8s, timeout: 45s, trip: consecutiveFailures >= 5}
  targets:
    apps:       {appB: {timeout: general, retry: retryForever, circuitBreaker: simpleCB, circuitBreakerCacheSize: 100}}
    actors:     {myActorType: {timeout: general, retry: retryForever, circuitBreaker: simpleCB,
                               circuitBreakerScope: both, circuitBreakerCacheSize: 5000}}   # scope: type|id|both
    components: {statestore: {outbound: {retry: retryForever, circuitBreaker: simpleCB}},
                 pubsub: {inbound: {retry: pubsubRetry}, outbound: {retry: pubsubRetry}}}
"""  # noqa: E501


def resiliency_file(tmp_path: Path, spec: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {{name: r}}\n{spec}"
    )
    return path


def load_one(tmp_path: Path, spec: str) -> Resiliency:
    resiliency_file(tmp_path, spec)
    (resiliency,) = load_resources([tmp_path], "app1", environ={}).resiliencies
    return resiliency


def problems(
    tmp_path: Path, spec: str, warnings: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The problems loading `spec` meets; its warnings are appended to `warnings` if given."""
    resiliency_file(tmp_path, spec)
    with pytest.raises(DaprResourceError) as info:
        load_resources([tmp_path], "app1", environ={})
    assert {Path(p.source).name for p in info.value.problems} == {"r.yaml"}
    if warnings is not None:
        warnings.extend((p.path, p.message) for p in info.value.warnings)
    return [(p.path, p.message) for p in info.value.problems]


def test_the_reference_resiliency_parses(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(REFERENCE)
    (r,) = load_resources([tmp_path], "app1", environ={}).resiliencies
    assert (r.name, r.scopes) == ("myresiliency", ("app1",))
    assert r.timeouts == {"general": 5.0, "important": 60.0}
    assert r.retries == {
        "retryForever": RetryPolicy("exponential", 5.0, 15.0, -1),
        "pubsubRetry": RetryPolicy("constant", 5.0, 60.0, 10),
        "onlyServerErrors": RetryPolicy(
            "constant",
            1.0,
            60.0,
            3,
            frozenset({500, 502, 503, 504}),
            frozenset({1, 2, 3, 4, 8, 9, 10, 11, 13, 14}),
        ),
    }
    breaker = r.circuit_breakers["simpleCB"]
    assert (breaker.max_requests, breaker.interval, breaker.timeout) == (1, 8.0, 45.0)
    assert breaker.trip.source == "consecutiveFailures >= 5"
    assert r.apps == {"appB": AppTarget("general", "retryForever", "simpleCB", 100)}
    assert r.actors == {
        "myActorType": ActorTarget("general", "retryForever", "simpleCB", "both", 5000)
    }
    assert r.components == {
        "statestore": ComponentTarget(outbound=PolicyNames(None, "retryForever", "simpleCB")),
        "pubsub": ComponentTarget(
            inbound=PolicyNames(retry="pubsubRetry"), outbound=PolicyNames(retry="pubsubRetry")
        ),
    }
    assert not load_resources([tmp_path], "app2", environ={}).resiliencies  # scoped to app1


def test_defaults_are_daprs(tmp_path: Path) -> None:
    r = load_one(
        tmp_path,
        "spec:\n  policies:\n    retries: {plain: {}}\n    circuitBreakers: {cb: {}}\n"
        "  targets:\n    apps: {b: {circuitBreaker: cb}}\n    actors: {a: {retry: plain}}\n",
    )
    assert r.retries["plain"] == RetryPolicy("constant", 5.0, 60.0, -1, frozenset(), frozenset())
    cb = r.circuit_breakers["cb"]
    assert (cb.max_requests, cb.interval, cb.timeout, cb.trip.source) == (
        1,
        0.0,
        60.0,
        "consecutiveFailures > 5",
    )
    assert r.apps["b"].circuit_breaker_cache_size == 100
    assert r.actors["a"].circuit_breaker_cache_size == 5000
    assert r.retries["plain"].retries_http_status(404)  # no matching: everything is retried


def test_matching_limits_what_is_retried(tmp_path: Path) -> None:
    policy = RetryPolicy(http_status_codes=frozenset({503}), grpc_status_codes=frozenset({14}))
    assert policy.retries_http_status(503)
    assert not policy.retries_http_status(500)
    assert policy.retries_grpc_status(14)
    assert not policy.retries_grpc_status(2)


@pytest.mark.parametrize(
    ("text", "low", "high", "codes"),
    [
        ("500,502-504", 100, 599, {500, 502, 503, 504}),
        (" 429 , 500 ", 100, 599, {429, 500}),
        ("0-2,16", 0, 16, {0, 1, 2, 16}),
        ("", 100, 599, set()),
    ],
)
def test_status_code_lists(text: str, low: int, high: int, codes: set[int]) -> None:
    assert parse_status_codes(text, low, high) == frozenset(codes)


@pytest.mark.parametrize(
    ("text", "message"),
    [("99", "outside 100-599"), ("500-600", "outside"), ("504-502", "empty range"), ("5xx", "not")],
)
def test_bad_status_code_lists(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_status_codes(text, 100, 599)


@pytest.mark.parametrize(
    ("source", "counts", "trips"),
    [
        ("consecutiveFailures > 5", Counts(consecutive_failures=6), True),
        ("consecutiveFailures > 5", Counts(consecutive_failures=5), False),
        ("consecutiveFailures >= 5", Counts(consecutive_failures=5), True),
        ("requests > 10 && totalFailures * 1 > 0", None, None),
        ("requests >= 10 && totalFailures >= 5", Counts(requests=10, total_failures=5), True),
        ("requests >= 10 && totalFailures >= 5", Counts(requests=9, total_failures=9), False),
        ("consecutiveFailures > 3 || totalFailures > 10", Counts(total_failures=11), True),
        ("(requests > 2 || totalSuccesses < 1) && consecutiveSuccesses == 0", Counts(), True),
        ("(requests > 2 || totalSuccesses < 1) && consecutiveSuccesses == 0",
         Counts(consecutive_successes=1), False),
        ("5 < consecutiveFailures", Counts(consecutive_failures=6), True),
        ("totalFailures != 0", Counts(total_failures=1), True),
        ("requests <= 3", Counts(requests=4), False),
    ],
)  # fmt: skip
def test_trip_predicates(source: str, counts: Counts | None, trips: bool | None) -> None:
    if counts is None:
        with pytest.raises(TripSyntaxError):
            parse_trip(source)
        return
    assert parse_trip(source)(counts) is trips


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("consecutiveFailures", "expected a comparison"),
        ("consecutiveFailures >", "expected a variable or an integer at the end"),
        ("failures > 5", "unknown variable 'failures' at column 1"),
        ("consecutiveFailures > 5 &&", "at the end"),
        ("(requests > 1", "expected ')'"),
        ("requests > 1)", "expected '&&', '||' or the end at column 13"),
        ("requests > 1 > 2", "column 14"),
        ("requests > -1", "unexpected '-'"),
        ("requests > 1.5", "unexpected '.'"),
        ("1 > 2", "names no variable"),
        ("!(requests > 1)", "unexpected '!'"),
        ("requests > 1 and requests < 5", "got 'and'"),
        ("size(requests) > 1", "unknown variable 'size'"),
    ],
)
def test_bad_trip_predicates(source: str, message: str) -> None:
    with pytest.raises(TripSyntaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_trip(source)


def test_every_problem_has_its_path(tmp_path: Path) -> None:
    warnings: list[tuple[str, str]] = []
    found = problems(
        tmp_path,
        "spec:\n"
        "  policies:\n"
        "    timeouts: {general: 5, slow: 1h30m, broken: 5 s}\n"
        "    retries:\n"
        "      fast: {policy: linear, duration: 1x, maxRetries: -2, maxRetry: 1,\n"
        "             matching: {httpStatusCodes: '500,700', gRPCStatusCodes: '17'}}\n"
        "    circuitBreakers:\n"
        "      cb: {trip: 'consecutiveFailures >> 5', maxRequests: many}\n"
        "  targets:\n"
        "    apps: {b: {retry: fats, timeout: general, circuitBreaker: nope}}\n"
        "    actors: {a: {circuitBreaker: cb}, t: {circuitBreaker: cb, circuitBreakerScope: all}}\n"
        "    components: {store: {outbound: {retry: fast, timeout: absent}}, other: {}}\n"
        "  target: {}\n",
        warnings,
    )
    assert warnings == [  # unknown fields: daprd ignores them
        ("$.spec.target", "unknown field (ignored; did you mean 'targets'?)"),
        ("$.spec.policies.retries.fast.maxRetry",
         "unknown field (ignored; did you mean 'maxRetries'?)"),
    ]  # fmt: skip
    assert found == [
        ("$.spec.policies.timeouts.general",
         "expected a Go duration such as 5s, 500ms, 1.5s or 1h30m, got 5"),
        ("$.spec.policies.timeouts.broken",
         "expected a Go duration such as 5s, 500ms, 1.5s or 1h30m, got '5 s'"),
        ("$.spec.policies.retries.fast.policy",
         "must be one of constant, exponential, got 'linear'"),
        ("$.spec.policies.retries.fast.maxRetries", "must be at least -1, got -2"),
        ("$.spec.policies.retries.fast.duration",
         "expected a Go duration such as 5s, 500ms, 1.5s or 1h30m, got '1x'"),
        ("$.spec.policies.retries.fast.matching.httpStatusCodes", "'700' is outside 100-599"),
        ("$.spec.policies.retries.fast.matching.gRPCStatusCodes", "'17' is outside 0-16"),
        ("$.spec.policies.circuitBreakers.cb.trip",
         "expected a variable or an integer at column 22, got '>'"),
        ("$.spec.policies.circuitBreakers.cb.maxRequests", "expected int, got str"),
        ("$.spec.targets.apps.b.retry", "no retries policy named 'fats'"),
        ("$.spec.targets.apps.b.circuitBreaker", "no circuitBreakers policy named 'nope'"),
        ("$.spec.targets.actors.a.circuitBreakerScope",
         "an actor circuit breaker needs a scope: type, id or both"),
        ("$.spec.targets.actors.t.circuitBreakerScope", "must be one of type, id, both, got 'all'"),
        ("$.spec.targets.components.store.outbound.timeout", "no timeouts policy named 'absent'"),
    ]  # fmt: skip


def test_a_built_in_override_keeps_at_least_three_retries(tmp_path: Path) -> None:
    r = load_one(
        tmp_path,
        "spec:\n  policies:\n    retries:\n"
        "      DaprBuiltInServiceRetries: {policy: constant, duration: 2s, maxRetries: 1}\n"
        "      mine: {maxRetries: 1}\n"
        "  targets: {apps: {b: {retry: DaprBuiltInActorRetries}}}\n",
    )
    assert r.retries["DaprBuiltInServiceRetries"] == RetryPolicy("constant", 2.0, 60.0, 3)
    assert r.retries["mine"].max_retries == 1


# --- precedence ---------------------------------------------------------------------------

FAST = RetryPolicy("constant", 0.1, 60.0, 2)
SLOW = RetryPolicy("exponential", 1.0, 30.0, 10)
GENERAL = RetryPolicy("constant", 5.0, 60.0, 5)
CB = CircuitBreakerPolicy(max_requests=2)
DEFAULT_CB = CircuitBreakerPolicy(timeout=30.0)


def resiliency(
    *,
    timeouts: dict[str, float] | None = None,
    retries: dict[str, RetryPolicy] | None = None,
    breakers: dict[str, CircuitBreakerPolicy] | None = None,
    apps: dict[str, AppTarget] | None = None,
) -> Resiliency:
    return Resiliency(
        "r", "default", (), timeouts or {}, retries or {}, breakers or {}, apps or {}, {}, {}
    )


def test_nothing_configured_means_the_built_in_service_retries() -> None:
    expected = ResolvedAppPolicy(None, BUILT_IN_SERVICE_RETRY, None, True, BUILT_IN_SERVICE_RETRY)
    assert resolve_app_policy([], "b") == expected
    assert RetryPolicy("constant", 1.0, 60.0, 3) == BUILT_IN_SERVICE_RETRY


def test_a_named_target_wins_and_takes_nothing_from_the_defaults() -> None:
    r = resiliency(
        timeouts={"t": 2.0, "DefaultAppTimeoutPolicy": 9.0},
        retries={"fast": FAST, "DefaultRetryPolicy": GENERAL},
        breakers={"cb": CB, "DefaultCircuitBreakerPolicy": DEFAULT_CB},
        apps={"b": AppTarget(retry="fast", circuit_breaker="cb", circuit_breaker_cache_size=7)},
    )
    assert resolve_app_policy([r], "b") == ResolvedAppPolicy(None, FAST, CB, False, None, 7)


def test_app_defaults_beat_general_defaults() -> None:
    r = resiliency(
        timeouts={"DefaultAppTimeoutPolicy": 3.0, "DefaultTimeoutPolicy": 9.0},
        retries={"DefaultAppRetryPolicy": SLOW, "DefaultRetryPolicy": GENERAL},
        breakers={"DefaultCircuitBreakerPolicy": DEFAULT_CB},
        apps={"other": AppTarget(retry="DefaultRetryPolicy")},
    )
    resolved = resolve_app_policy([r], "b")
    assert (resolved.timeout, resolved.retry, resolved.circuit_breaker) == (3.0, SLOW, DEFAULT_CB)
    # No named target covers b, so daprd's built-in connection retries stay on underneath.
    assert (resolved.builtin, resolved.connection_retry) == (False, BUILT_IN_SERVICE_RETRY)


def test_general_defaults_apply_when_there_is_no_app_default() -> None:
    r = resiliency(timeouts={"DefaultTimeoutPolicy": 9.0}, retries={"DefaultRetryPolicy": GENERAL})
    resolved = resolve_app_policy([r], "b")
    assert (resolved.timeout, resolved.retry, resolved.builtin) == (9.0, GENERAL, False)


def test_a_default_timeout_alone_leaves_the_built_in_retries() -> None:
    resolved = resolve_app_policy([resiliency(timeouts={"DefaultTimeoutPolicy": 4.0})], "b")
    assert (resolved.timeout, resolved.retry, resolved.builtin) == (
        4.0,
        BUILT_IN_SERVICE_RETRY,
        True,
    )


def test_a_user_policy_named_like_the_built_in_overrides_it() -> None:
    mine = RetryPolicy("constant", 2.0, 60.0, 4)
    resolved = resolve_app_policy([resiliency(retries={"DaprBuiltInServiceRetries": mine})], "b")
    assert resolved == ResolvedAppPolicy(None, mine, None, True, mine)


def test_later_resources_replace_same_named_entries() -> None:
    first = resiliency(retries={"fast": FAST}, apps={"b": AppTarget(retry="fast")})
    second = resiliency(retries={"fast": SLOW})
    assert resolve_app_policy([first, second], "b").retry == SLOW
    assert resolve_app_policy([first], "c").builtin is True


def test_loaded_resiliencies_resolve(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(REFERENCE)
    resiliencies = load_resources([tmp_path], "app1", environ={}).resiliencies
    resolved = resolve_app_policy(resiliencies, "appB")
    assert resolved.timeout == 5.0
    assert resolved.retry == RetryPolicy("exponential", 5.0, 15.0, -1)
    assert resolved.circuit_breaker is not None
    assert resolved.circuit_breaker.trip(Counts(consecutive_failures=5)) is True
    assert resolve_app_policy(resiliencies, "appC").builtin is True
