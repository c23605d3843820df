"""Passive health: eject an instance after consecutive failures, as Envoy's outlier detection."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.discovery.base import Instance

__all__ = ["OutlierDetector", "OutlierStatus"]

_Group = tuple[str, str]  # (app_id, namespace): the "cluster" whose hosts share one ejection cap


@dataclass(frozen=True, slots=True)
class OutlierStatus:
    """One instance as the admin page shows it."""

    instance: Instance
    ejected: bool
    ejected_for: float  # seconds of ejection left, 0 when in rotation
    times_ejected: int
    consecutive_failures: int


@dataclass(slots=True)
class _Host:
    consecutive_failures: int = 0
    backoff: int = 0  # Envoy's ejectTimeBackoff: this ejection lasts base_ejection_time x backoff
    times_ejected: int = 0
    ejected_until: float | None = None
    returned_at: float | None = None  # when the last ejection ended


class OutlierDetector:
    """Envoy's consecutive-5xx detector, instances grouped per (app id, namespace).

    Semantics (envoy outlier_detection.proto and source/common/upstream/outlier_detection_impl.cc):

    - `consecutive_failures` failures in a row (Envoy's consecutive_5xx, default 5) eject an
      instance; any success resets the count, and so does the end of an ejection.
    - An ejection lasts base_ejection_time x backoff, capped at max_ejection_time (30 s, 300 s).
      backoff grows by one per ejection (until base x backoff reaches max + base) and shrinks
      by one per `interval` (10 s) the instance then spends in rotation, so a host that keeps
      failing stays out longer and longer, and one that recovered is forgiven gradually.
    - The cap: an instance is ejected only if, counting it, at most max_ejection_percent
      (10 %) of its app's instances would be ejected. With the defaults an app needs 10
      instances before one can be ejected; with 1 or 2 instances (100 %, 50 %) nothing is ever
      ejected unless max_ejection_percent allows it. `always_eject_one_host` (Envoy's option of
      that name, default off) lets the first ejection through regardless of the cap. Older
      Envoy releases always let the first host go; current Envoy does not by default.
    - Envoy returns hosts to rotation at its next `interval` sweep; this detector does so the
      moment the ejection time is over. Failures recorded while ejected are ignored.
    - filter() returns [] when every instance is ejected; balancing over all of them then
      (Envoy's panic mode) is the caller's decision.

    The hosts of an app are the instances last passed to filter() (plus any recorded since);
    state of instances that disappeared from the resolver's answer is dropped, as Envoy drops
    a removed host's monitor. Pass the full resolved list to filter(). Not thread-safe: use it
    from the trio thread only.
    """

    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        base_ejection_time: float = 30.0,
        max_ejection_time: float = 300.0,
        max_ejection_percent: float = 10.0,
        interval: float = 10.0,
        always_eject_one_host: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if base_ejection_time <= 0 or interval <= 0:
            raise ValueError("base_ejection_time and interval must be positive")
        if max_ejection_time < base_ejection_time:
            raise ValueError("max_ejection_time cannot be smaller than base_ejection_time")
        if not 0 <= max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be between 0 and 100")
        self.consecutive_failures = consecutive_failures
        self.base_ejection_time = base_ejection_time
        self.max_ejection_time = max_ejection_time
        self.max_ejection_percent = max_ejection_percent
        self.interval = interval
        self.always_eject_one_host = always_eject_one_host
        self._clock = clock
        self._groups: dict[_Group, dict[Instance, _Host]] = {}
        # Envoy's counters of the same names (cluster.<n>.outlier_detection.*).
        self.ejections_enforced_total = 0
        self.ejections_overflow = 0

    def record(self, instance: Instance, ok: bool) -> None:
        """The outcome of one request to `instance` (ok: no 5xx, no connect failure or reset)."""
        now = self._clock()
        group = self._groups.setdefault((instance.app_id, instance.namespace), {})
        host = group.setdefault(instance, _Host())
        self._return_if_due(host, now)
        if host.ejected_until is not None:
            return
        if ok:
            host.consecutive_failures = 0
            return
        host.consecutive_failures += 1
        if host.consecutive_failures >= self.consecutive_failures:
            # Reset whether or not the cap lets the ejection happen, as Envoy does.
            host.consecutive_failures = 0
            self._eject(group, host, now)

    def filter(self, instances: Iterable[Instance]) -> list[Instance]:
        """The instances in rotation, in the given order; also refreshes the apps' host lists."""
        given = list(instances)
        now = self._clock()
        by_group: dict[_Group, list[Instance]] = {}
        for instance in given:
            by_group.setdefault((instance.app_id, instance.namespace), []).append(instance)
        for key, members in by_group.items():
            known = self._groups.get(key, {})
            self._groups[key] = {member: known.get(member) or _Host() for member in members}
        in_rotation: list[Instance] = []
        for instance in given:
            host = self._groups[(instance.app_id, instance.namespace)][instance]
            self._return_if_due(host, now)
            if host.ejected_until is None:
                in_rotation.append(instance)
        return in_rotation

    def is_ejected(self, instance: Instance) -> bool:
        host = self._groups.get((instance.app_id, instance.namespace), {}).get(instance)
        if host is None:
            return False
        self._return_if_due(host, self._clock())
        return host.ejected_until is not None

    def statuses(self) -> list[OutlierStatus]:
        """Every known instance with its ejection state, for the admin page."""
        now = self._clock()
        statuses = []
        for group in self._groups.values():
            for instance, host in group.items():
                self._return_if_due(host, now)
                left = 0.0 if host.ejected_until is None else host.ejected_until - now
                statuses.append(
                    OutlierStatus(
                        instance,
                        host.ejected_until is not None,
                        left,
                        host.times_ejected,
                        host.consecutive_failures,
                    )
                )
        return statuses

    def _eject(self, group: dict[Instance, _Host], host: _Host, now: float) -> None:
        active = 0
        for other in group.values():
            self._return_if_due(other, now)
            active += other.ejected_until is not None
        ejected_percent = 100.0 * (active + 1) / len(group)
        allowed = ejected_percent <= self.max_ejection_percent or (
            self.always_eject_one_host and active == 0
        )
        if not allowed:
            self.ejections_overflow += 1
            return
        if host.returned_at is not None:
            # Envoy decrements the backoff at each interval sweep that finds the host in
            # rotation for at least an interval; this is that count, taken lazily.
            healthy_sweeps = math.floor((now - host.returned_at) / self.interval)
            host.backoff = max(0, host.backoff - healthy_sweeps)
        if (
            host.backoff * self.base_ejection_time
            < self.max_ejection_time + self.base_ejection_time
        ):
            host.backoff += 1
        duration = min(self.base_ejection_time * host.backoff, self.max_ejection_time)
        host.ejected_until = now + duration
        host.times_ejected += 1
        self.ejections_enforced_total += 1

    @staticmethod
    def _return_if_due(host: _Host, now: float) -> None:
        if host.ejected_until is not None and now >= host.ejected_until:
            host.returned_at = host.ejected_until
            host.ejected_until = None
            host.consecutive_failures = 0
