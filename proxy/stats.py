"""Envoy-style counters and gauges: plain objects bumped on the hot path, read by the admin port."""

from __future__ import annotations

from collections.abc import Iterator


class Counter:
    """Monotonic count; `value += 1` is the whole hot-path cost."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Gauge:
    """A current level (active connections, streams)."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def dec(self, n: int = 1) -> None:
        self.value -= n


class Stats:
    """One store per App; names are dotted like Envoy's (`cluster.backend.upstream_rq_total`)."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def counter(self, name: str) -> Counter:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = Counter(name)
        return c

    def gauge(self, name: str) -> Gauge:
        g = self._gauges.get(name)
        if g is None:
            g = self._gauges[name] = Gauge(name)
        return g

    def counters(self) -> Iterator[Counter]:
        return iter(sorted(self._counters.values(), key=lambda c: c.name))

    def gauges(self) -> Iterator[Gauge]:
        return iter(sorted(self._gauges.values(), key=lambda g: g.name))


def typed_items(stats: Stats) -> list[tuple[str, int, str]]:
    """Every counter and gauge as (name, value, "counter" | "gauge"), counters first."""
    counters = [(c.name, c.value, "counter") for c in stats.counters()]
    return counters + [(g.name, g.value, "gauge") for g in stats.gauges()]


class ListenerStats:
    """The counters one listener's connections bump, resolved once at config time."""

    __slots__ = (
        "by_class",
        "cx_active",
        "cx_client_overflow",
        "cx_destroy_remote",
        "cx_first_byte_timeout",
        "cx_idle_evicted",
        "cx_overflow",
        "cx_protocol_error",
        "cx_total",
        "rq_1xx",
        "rq_2xx",
        "rq_3xx",
        "rq_4xx",
        "rq_5xx",
        "rq_active",
        "rq_reset",
        "rq_timeout",
        "rq_too_large",
        "rq_total",
    )

    def __init__(self, stats: Stats, prefix: str) -> None:
        p = f"http.{prefix}."
        self.cx_total = stats.counter(p + "downstream_cx_total")
        self.cx_active = stats.gauge(p + "downstream_cx_active")
        self.cx_destroy_remote = stats.counter(p + "downstream_cx_destroy_remote")
        self.cx_protocol_error = stats.counter(p + "downstream_cx_protocol_error")
        self.cx_overflow = stats.counter(p + "downstream_cx_overflow")  # over max_connections
        self.cx_client_overflow = stats.counter(p + "downstream_cx_client_overflow")
        self.cx_idle_evicted = stats.counter(p + "downstream_cx_idle_evicted")
        self.cx_first_byte_timeout = stats.counter(p + "downstream_cx_first_byte_timeout")
        self.rq_total = stats.counter(p + "downstream_rq_total")
        self.rq_active = stats.gauge(p + "downstream_rq_active")
        self.rq_timeout = stats.counter(p + "downstream_rq_timeout")
        self.rq_reset = stats.counter(p + "downstream_rq_rx_reset")
        self.rq_too_large = stats.counter(p + "downstream_rq_too_large")
        self.rq_1xx = stats.counter(p + "downstream_rq_1xx")
        self.rq_2xx = stats.counter(p + "downstream_rq_2xx")
        self.rq_3xx = stats.counter(p + "downstream_rq_3xx")
        self.rq_4xx = stats.counter(p + "downstream_rq_4xx")
        self.rq_5xx = stats.counter(p + "downstream_rq_5xx")
        self.by_class = (
            self.rq_1xx,
            self.rq_1xx,
            self.rq_2xx,
            self.rq_3xx,
            self.rq_4xx,
            self.rq_5xx,
        )

    def response(self, status: int) -> None:
        """Count a response by status class (499/5xx included)."""
        self.by_class[min(status // 100, 5)].inc()


class ClusterStats:
    """The counters one cluster's pools bump."""

    __slots__ = (
        "cx_active",
        "cx_connect_fail",
        "cx_connect_timeout",
        "cx_total",
        "rq_active",
        "rq_by_class",
        "rq_overflow",
        "rq_reset",
        "rq_retry",
        "rq_timeout",
        "rq_total",
    )

    def __init__(self, stats: Stats, name: str) -> None:
        p = f"cluster.{name}."
        self.rq_retry = stats.counter(p + "upstream_rq_retry")
        self.cx_total = stats.counter(p + "upstream_cx_total")
        self.cx_active = stats.gauge(p + "upstream_cx_active")
        self.cx_connect_fail = stats.counter(p + "upstream_cx_connect_fail")
        self.cx_connect_timeout = stats.counter(p + "upstream_cx_connect_timeout")
        self.rq_total = stats.counter(p + "upstream_rq_total")
        self.rq_active = stats.gauge(p + "upstream_rq_active")
        self.rq_overflow = stats.counter(p + "upstream_rq_pending_overflow")
        self.rq_reset = stats.counter(p + "upstream_rq_rx_reset")
        self.rq_timeout = stats.counter(p + "upstream_rq_timeout")
        self.rq_by_class = tuple(
            stats.counter(f"{p}upstream_rq_{c}xx") for c in ("1", "1", "2", "3", "4", "5")
        )

    def response(self, status: int) -> None:
        self.rq_by_class[min(status // 100, 5)].inc()


class RetryStats:
    """The counters one retry filter bumps, named like Envoy's `upstream_rq_retry*`."""

    __slots__ = ("rq_retry", "rq_retry_limit_exceeded", "rq_retry_overflow", "rq_retry_success")

    def __init__(self, stats: Stats, prefix: str) -> None:
        # http.<prefix>.… so the Prometheus renderer turns the prefix into a `listener` label.
        p = f"http.{prefix}.retry.upstream_"
        self.rq_retry = stats.counter(p + "rq_retry")
        self.rq_retry_success = stats.counter(p + "rq_retry_success")
        self.rq_retry_limit_exceeded = stats.counter(p + "rq_retry_limit_exceeded")
        self.rq_retry_overflow = stats.counter(p + "rq_retry_overflow")
