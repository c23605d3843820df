"""Retry decisions, back-off bounds and the retry filter over a stub `next`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import msgspec
import pytest
import trio

from config import schema
from config.loader import ConfigError, load_text
from filters.retry.filter import RetryFilter
from filters.retry.policy import (
    PerTryTimeout,
    RetryBudget,
    RetryPolicy,
    backoff,
    max_retries_override,
)
from proxy.http.errors import (
    NoHealthyUpstream,
    ProxyError,
    UpstreamConnectFailure,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamRemoteReset,
    UpstreamReset,
    UpstreamTimeout,
)
from proxy.http.model import Body, BytesBody, Headers, Request, Response
from proxy.stats import RetryStats, Stats
from proxy.upstream.outgoing import RetryableReset


def _duration(cls: type, value: object) -> object:
    if cls is schema.Duration:
        return schema.Duration.parse(value)
    raise NotImplementedError(cls.__name__)


def policy(**fields: object) -> RetryPolicy:
    return RetryPolicy.from_config(msgspec.convert(fields, schema.RetryFilter, dec_hook=_duration))


# --- retry_on ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_on", "status", "expected"),
    [
        (["5xx"], 500, True),
        (["5xx"], 503, True),
        (["5xx"], 599, True),
        (["5xx"], 499, False),
        (["5xx"], 200, False),
        (["gateway-error"], 502, True),
        (["gateway-error"], 503, True),
        (["gateway-error"], 504, True),
        (["gateway-error"], 500, False),
        (["retriable-4xx"], 409, True),
        (["retriable-4xx"], 404, False),
        (["connect-failure", "refused-stream", "reset"], 503, False),
    ],
)
def test_status_conditions(retry_on: list[str], status: int, expected: bool) -> None:
    assert policy(retry_on=retry_on).retry_status(status) is expected


def test_retriable_status_codes_need_their_condition() -> None:
    codes = policy(retry_on=["retriable-status-codes"], retriable_status_codes=[429, 418])
    assert codes.retry_status(429)
    assert codes.retry_status(418)
    assert not codes.retry_status(503)
    assert not policy(retry_on=["5xx"], retriable_status_codes=[429]).retry_status(429)


_ERRORS: list[tuple[ProxyError, set[str]]] = [
    (UpstreamConnectFailure(), {"connect-failure", "5xx", "gateway-error", "reset"}),
    (RetryableReset(), {"refused-stream", "5xx", "gateway-error", "reset"}),
    (UpstreamReset(), {"5xx", "gateway-error", "reset"}),
    (UpstreamRemoteReset(), {"5xx", "gateway-error", "reset"}),
    (UpstreamProtocolError(), {"5xx", "gateway-error", "reset"}),
    (PerTryTimeout(), {"5xx", "gateway-error", "reset"}),
    (UpstreamTimeout(), set()),  # the route timeout: the request's whole budget is spent
    (UpstreamOverflow(), set()),
    (NoHealthyUpstream(), set()),
    (ProxyError(), set()),
]
_ALL_CONDITIONS = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
]


@pytest.mark.parametrize(("error", "retried_by"), _ERRORS, ids=lambda e: type(e).__name__)
def test_error_conditions(error: ProxyError, retried_by: set[str]) -> None:
    for condition in _ALL_CONDITIONS:
        fields: dict[str, object] = {"retry_on": [condition]}
        if condition == "retriable-status-codes":
            fields["retriable_status_codes"] = [503]
        assert policy(**fields).retry_error(error) is (condition in retried_by), condition


def test_defaults_are_envoys() -> None:
    p = policy()
    assert p.retry_on == {"connect-failure", "refused-stream"}
    assert p.num_retries == 1
    assert p.base_interval == pytest.approx(0.025)
    assert p.max_interval == pytest.approx(0.25)
    assert p.per_try_timeout == 0


# --- back-off ----------------------------------------------------------------------------------


def test_backoff_upper_bounds_double_until_the_cap() -> None:
    almost_one = 1.0 - 1e-12
    uppers = [backoff(n, 0.025, 0.25, lambda: almost_one) for n in range(1, 7)]
    assert uppers == pytest.approx([0.025, 0.075, 0.175, 0.25, 0.25, 0.25])
    assert backoff(10_000, 0.025, 0.25, lambda: almost_one) == pytest.approx(0.25)


def test_backoff_is_fully_jittered_from_zero() -> None:
    assert backoff(3, 0.025, 0.25, lambda: 0.0) == 0.0
    assert backoff(3, 0.025, 0.25, lambda: 0.5) == pytest.approx(0.0875)


def test_backoff_stays_in_bounds_for_any_draw() -> None:
    draws = itertools.cycle([0.0, 0.1, 0.37, 0.5, 0.99, 0.999999])
    p = policy(base_interval="10ms", max_interval="1s")
    for n in range(1, 40):
        wait = p.backoff(n, lambda: next(draws))
        assert 0 <= wait < min((2**n - 1) * 0.01, 1.0)


# --- headers and budget ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(b"3", 3), (b" 0 ", 0), (b"-1", None), (b"two", None), (b"", None)]
)
def test_max_retries_header(value: bytes, expected: int | None) -> None:
    assert max_retries_override([(b"x-envoy-max-retries", value)]) == expected
    assert max_retries_override([(b"x-other", b"3")]) is None


def test_budget_limits_concurrent_retries() -> None:
    budget = RetryBudget(20.0, 3)
    budget.active = 10
    budget.retrying = 2
    assert budget.allows()  # max(3, 2) = 3
    budget.retrying = 3
    assert not budget.allows()
    budget.active = 100
    assert budget.allows()  # 20 % of 100 = 20
    budget.retrying = 20
    assert not budget.allows()
    unlimited = RetryBudget(None)
    unlimited.retrying = 10**6
    assert unlimited.allows()


# --- config validation -------------------------------------------------------------------------


def _config(filter_yaml: str) -> str:
    return f"""
listeners:
  - name: ingress
    address: 127.0.0.1:0
    filters:
      - {filter_yaml}
      - type: router
    routes: [{{match: {{prefix: /}}, cluster: backend}}]
clusters: [{{name: backend, endpoints: ["127.0.0.1:1"]}}]
"""


def problems(filter_yaml: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_text(_config(filter_yaml))
    return [(p.path, p.message) for p in info.value.problems]


def test_valid_retry_config_loads() -> None:
    config = load_text(
        _config(
            "{type: retry, retry_on: [5xx, retriable-status-codes], retriable_status_codes: [429],"
            " num_retries: 3, per_try_timeout: 1s, base_interval: 10ms, max_interval: 1s,"
            " retry_budget: {budget_percent: 50}}"
        )
    )
    retry = config.listeners[0].filters[0]
    assert isinstance(retry, schema.RetryFilter)
    assert retry.retry_budget == schema.RetryBudget(budget_percent=50.0)


def test_retry_config_problems_have_paths() -> None:
    where = "$.listeners[0].filters[0]"
    assert problems(
        "{type: retry, num_retries: -1, base_interval: 0, retriable_status_codes: [99, 600],"
        " retry_budget: {budget_percent: 120, min_retry_concurrency: -1}}"
    ) == [
        (f"{where}.num_retries", "must be >= 0, got -1"),
        (f"{where}.base_interval", "must be positive, got 0"),
        (f"{where}.retriable_status_codes[0]", "must be 100-599, got 99"),
        (f"{where}.retriable_status_codes[1]", "must be 100-599, got 600"),
        (
            f"{where}.retriable_status_codes",
            "only used when retry_on lists retriable-status-codes",
        ),
        (f"{where}.retry_budget.budget_percent", "must be 0-100, got 120"),
        (f"{where}.retry_budget.min_retry_concurrency", "must be >= 0, got -1"),
    ]


def test_retry_config_rejects_unknown_conditions_and_bad_intervals() -> None:
    where = "$.listeners[0].filters[0]"
    [(path, message)] = problems("{type: retry, retry_on: [5xx, sometimes]}")
    assert path == f"{where}.retry_on[1]"
    assert "sometimes" in message
    assert problems("{type: retry, base_interval: 1s, max_interval: 100ms}") == [
        (f"{where}.max_interval", "must be >= base_interval (1s), got 0.1s")
    ]
    assert problems("{type: retry, per_try_timeout: -1s}")[0][0] == f"{where}.per_try_timeout"
    assert problems("{type: retry, retry_on: [retriable-status-codes]}") == [
        (
            f"{where}.retriable_status_codes",
            "retry_on lists retriable-status-codes, so list at least one code",
        )
    ]


# --- the filter over a stub next ---------------------------------------------------------------


class TrackedBody:
    """A response body that records whether it was closed."""

    length: int | None = None
    trailers: Headers | None = None

    def __init__(self) -> None:
        self.closed = False

    async def read(self) -> bytes:
        return b""

    async def aclose(self) -> None:
        self.closed = True


class StreamBody:
    """A request body of unknown length, pulled chunk by chunk."""

    length: int | None = None
    trailers: Headers | None = None

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        self.chunks.clear()


class Upstream:
    """A stub `next`: plays `outcomes` in order (a status or an error) and records attempts."""

    def __init__(self, outcomes: list[int | ProxyError], *, read_body: bool = True) -> None:
        self.outcomes: Iterator[int | ProxyError] = iter(outcomes)
        self.read_body = read_body
        self.seen: list[tuple[bytes, Headers, bytes]] = []
        self.bodies: list[TrackedBody] = []

    async def __call__(self, request: Request, /) -> Response:
        outcome = next(self.outcomes)
        body = b""
        if self.read_body or not isinstance(outcome, UpstreamConnectFailure):
            while chunk := await request.body.read():
                body += chunk
        self.seen.append((request.target, list(request.headers), body))
        request.target = b"/rewritten"  # as the router's prefix_rewrite does
        if isinstance(outcome, ProxyError):
            raise outcome
        tracked = TrackedBody()
        self.bodies.append(tracked)
        return Response(outcome, [], tracked)


def make(
    stats: Stats, budget: RetryBudget | None = None, **fields: object
) -> Callable[[], RetryFilter]:
    def build() -> RetryFilter:
        cfg = msgspec.convert(fields, schema.RetryFilter, dec_hook=_duration)
        f = RetryFilter(
            RetryPolicy.from_config(cfg),
            budget or RetryBudget.from_config(cfg.retry_budget),
            RetryStats(stats, "ingress"),
            include_attempt_count=cfg.include_attempt_count,
            respect_request_headers=cfg.respect_request_headers,
            random=lambda: 0.0,
        )
        return f

    return build


def counters(stats: Stats) -> dict[str, int]:
    prefix = "http.ingress.retry.upstream_"
    return {c.name.removeprefix(prefix): c.value for c in stats.counters() if c.value}


def request(body: Body | None = None, headers: Headers | None = None) -> Request:
    return Request(b"POST", b"/orders", headers or [], body or BytesBody(b"payload"))


async def test_retries_until_success_with_identical_bytes() -> None:
    stats = Stats()
    retry = make(stats, retry_on=["5xx"], num_retries=3, include_attempt_count=True)()
    upstream = Upstream([503, 502, 200])
    response = await retry(request(headers=[(b"x-envoy-attempt-count", b"9")]), upstream)
    assert response.status == 200
    assert [seen[2] for seen in upstream.seen] == [b"payload"] * 3
    assert [seen[0] for seen in upstream.seen] == [b"/orders"] * 3  # each attempt from scratch
    assert [seen[1] for seen in upstream.seen] == [
        [(b"x-envoy-attempt-count", str(n).encode())] for n in (1, 2, 3)
    ]
    assert [b.closed for b in upstream.bodies] == [True, True, False]
    assert counters(stats) == {"rq_retry": 2, "rq_retry_success": 1}


async def test_exhausted_returns_the_last_response_with_urx() -> None:
    stats = Stats()
    retry = make(stats, retry_on=["gateway-error"], num_retries=2)()
    req = request()
    response = await retry(req, Upstream([503, 503, 504]))
    assert response.status == 504
    assert req.info.response_flags == ["URX"]
    assert counters(stats) == {"rq_retry": 2, "rq_retry_limit_exceeded": 1}


async def test_exhausted_raises_the_last_error_keeping_its_flag() -> None:
    stats = Stats()
    retry = make(stats, num_retries=1)()
    req = request()
    with pytest.raises(UpstreamConnectFailure) as info:
        await retry(req, Upstream([UpstreamConnectFailure("one"), UpstreamConnectFailure("two")]))
    assert info.value.message == "two"
    assert info.value.flag == "UF"
    assert req.info.response_flags == ["URX"]


async def test_not_retriable_is_returned_untouched() -> None:
    stats = Stats()
    retry = make(stats)()  # default: connect-failure, refused-stream
    upstream = Upstream([503])
    response = await retry(request(), upstream)
    assert response.status == 503
    assert len(upstream.seen) == 1
    assert not upstream.bodies[0].closed
    assert counters(stats) == {}


async def test_streamed_body_is_not_retried_after_a_response() -> None:
    stats = Stats()
    retry = make(stats, retry_on=["5xx"], num_retries=3)()
    upstream = Upstream([503, 200])
    response = await retry(request(StreamBody([b"a" * 10, b"b" * 10])), upstream)
    assert response.status == 503
    assert len(upstream.seen) == 1
    assert counters(stats) == {}


async def test_streamed_body_is_retried_after_a_connect_failure_before_any_read() -> None:
    stats = Stats()
    retry = make(stats, num_retries=1)()
    upstream = Upstream([UpstreamConnectFailure(), 200], read_body=False)
    response = await retry(request(StreamBody([b"a" * 10, b"b" * 10])), upstream)
    assert response.status == 200
    assert upstream.seen[1][2] == b"a" * 10 + b"b" * 10


async def test_streamed_body_read_then_reset_is_not_retried() -> None:
    retry = make(Stats(), retry_on=["reset", "connect-failure"], num_retries=2)()
    upstream = Upstream([UpstreamConnectFailure(), 200])  # this connect failure read the body
    with pytest.raises(UpstreamConnectFailure):
        await retry(request(StreamBody([b"x"])), upstream)
    assert len(upstream.seen) == 1


async def test_small_declared_body_is_read_once_and_replayed() -> None:
    class Declared(StreamBody):
        def __init__(self) -> None:
            super().__init__([b"x" * 1000, b"y" * 1000])
            self.length = 2000

    retry = make(Stats(), retry_on=["5xx"])()
    upstream = Upstream([500, 200])
    assert (await retry(request(Declared()), upstream)).status == 200
    assert [seen[2] for seen in upstream.seen] == [b"x" * 1000 + b"y" * 1000] * 2


async def test_max_retries_header_only_when_respected() -> None:
    header = [(b"x-envoy-max-retries", b"2")]
    ignored = Upstream([503, 503, 200])
    retry = make(Stats(), retry_on=["5xx"], num_retries=0)()
    assert (await retry(request(headers=list(header)), ignored)).status == 503
    assert ignored.seen[0][1] == header  # not ours to consume

    honoured = Upstream([503, 503, 200])
    retry = make(Stats(), retry_on=["5xx"], num_retries=0, respect_request_headers=True)()
    assert (await retry(request(headers=list(header)), honoured)).status == 200
    assert [seen[1] for seen in honoured.seen] == [[], [], []]


async def test_budget_overflow_skips_the_retry() -> None:
    stats = Stats()
    budget = RetryBudget(0.0, 1)
    budget.retrying = 1  # another request's retry is in flight
    retry = make(stats, budget, retry_on=["5xx"], num_retries=3)()
    upstream = Upstream([503, 200])
    assert (await retry(request(), upstream)).status == 503
    assert len(upstream.seen) == 1
    assert counters(stats) == {"rq_retry_overflow": 1}
    assert budget.retrying == 1
    assert budget.active == 0


async def test_per_try_timeout_retries_under_5xx_only() -> None:
    release = trio.Event()

    class Slow(Upstream):
        async def __call__(self, request: Request, /) -> Response:
            if not self.seen:
                self.seen.append((request.target, [], b""))
                await release.wait()
            return await super().__call__(request)

    retry = make(Stats(), retry_on=["5xx"], per_try_timeout="10ms")()
    slow = Slow([200])
    with trio.fail_after(10):
        assert (await retry(request(), slow)).status == 200

    retry = make(Stats(), retry_on=["connect-failure"], per_try_timeout="10ms")()
    req = request()
    with trio.fail_after(10), pytest.raises(PerTryTimeout) as info:
        await retry(req, Slow([200]))
    assert info.value.flag == "UT"
    assert req.info.response_flags == []


async def test_cancellation_during_backoff_stops_and_releases_the_budget() -> None:
    budget = RetryBudget(100.0, 1)
    fields = {"retry_on": ["5xx"], "num_retries": 5, "base_interval": "10s"}
    cfg = msgspec.convert(fields, schema.RetryFilter, dec_hook=_duration)
    retry = RetryFilter(
        RetryPolicy.from_config(cfg), budget, RetryStats(Stats(), "x"), random=lambda: 0.999
    )
    upstream = Upstream([503] * 6)
    with trio.move_on_after(0.05) as scope:
        await retry(request(), upstream)
    assert scope.cancelled_caught
    assert len(upstream.seen) == 1
    assert budget.retrying == 0
    assert budget.active == 0
