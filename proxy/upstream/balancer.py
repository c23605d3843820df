"""Upstream hosts with their live counters, and the load balancers that pick among them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from config.schema import parse_address
from proxy.stats import ClusterStats

if TYPE_CHECKING:
    from proxy.upstream.pool import Pool


class Load:
    """Requests in flight on one cluster (its circuit breaker reads this)."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0


class Host:
    """One endpoint of a cluster: its address, pool and the counters the admin page shows."""

    __slots__ = (
        "_load",
        "_stats",
        "address",
        "cx_active",
        "healthy",
        "host",
        "pool",
        "port",
        "rq_active",
        "rq_error",
        "rq_total",
    )

    def __init__(self, address: str, load: Load, stats: ClusterStats) -> None:
        self.host, self.port = parse_address(address)
        self.address = (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        )
        self._load = load
        self._stats = stats
        self.cx_active = 0
        self.rq_active = 0
        self.rq_total = 0
        self.rq_error = 0
        self.healthy = True  # last connect attempt succeeded (informational)
        self.pool: Pool

    def begin(self) -> None:
        """A request starts on this host (counted until its response body ends)."""
        self.rq_active += 1
        self.rq_total += 1
        self._load.active += 1
        self._stats.rq_active.inc()
        self._stats.rq_total.inc()

    def end(self, error: bool) -> None:
        """The request started by `begin` is over; called exactly once per `begin`."""
        self.rq_active -= 1
        self._load.active -= 1
        self._stats.rq_active.dec()
        if error:
            self.rq_error += 1

    def connected(self) -> None:
        self.cx_active += 1
        self.healthy = True
        self._stats.cx_total.inc()
        self._stats.cx_active.inc()

    def disconnected(self) -> None:
        self.cx_active -= 1
        self._stats.cx_active.dec()


class Balancer(Protocol):
    def pick(self) -> Host: ...


class RoundRobin:
    """Each host in turn."""

    __slots__ = ("_hosts", "_next")

    def __init__(self, hosts: Sequence[Host]) -> None:
        self._hosts = tuple(hosts)
        self._next = 0

    def pick(self) -> Host:
        hosts = self._hosts
        i = self._next
        self._next = (i + 1) % len(hosts)
        return hosts[i]


class LeastRequest:
    """Power of two choices: of two distinct random hosts, the one with fewer active requests."""

    __slots__ = ("_hosts", "_random")

    def __init__(self, hosts: Sequence[Host], rng: random.Random | None = None) -> None:
        self._hosts = tuple(hosts)
        self._random = rng if rng is not None else random.Random()

    def pick(self) -> Host:
        hosts = self._hosts
        if len(hosts) == 1:
            return hosts[0]
        a, b = self._random.sample(hosts, 2)
        return b if b.rq_active < a.rq_active else a


def make_balancer(policy: str, hosts: Sequence[Host]) -> Balancer:
    if policy == "least_request":
        return LeastRequest(hosts)
    return RoundRobin(hosts)
