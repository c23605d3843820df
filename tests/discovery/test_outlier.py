"""OutlierDetector: Envoy's consecutive-failure ejection, its backoff and its percentage cap."""

from __future__ import annotations

import pytest

from proxy.discovery.base import Instance
from proxy.discovery.outlier import OutlierDetector
from tests.discovery.helpers import FakeClock


def instances(count: int, app_id: str = "orders") -> list[Instance]:
    return [Instance(app_id, "default", f"10.0.0.{n}", 50002) for n in range(1, count + 1)]


def fail(detector: OutlierDetector, instance: Instance, times: int = 5) -> None:
    for _ in range(times):
        detector.record(instance, ok=False)


def test_ejected_after_consecutive_failures_and_only_then() -> None:
    clock = FakeClock()
    detector = OutlierDetector(clock=clock)
    hosts = instances(10)
    assert detector.filter(hosts) == hosts
    fail(detector, hosts[0], 4)
    assert detector.filter(hosts) == hosts
    detector.record(hosts[0], ok=False)
    assert detector.filter(hosts) == hosts[1:]
    assert detector.is_ejected(hosts[0])
    assert detector.ejections_enforced_total == 1


def test_a_success_resets_the_consecutive_count() -> None:
    detector = OutlierDetector(clock=FakeClock())
    hosts = instances(10)
    detector.filter(hosts)
    fail(detector, hosts[0], 4)
    detector.record(hosts[0], ok=True)
    fail(detector, hosts[0], 4)
    assert detector.filter(hosts) == hosts
    detector.record(hosts[0], ok=False)
    assert hosts[0] not in detector.filter(hosts)


def test_returns_to_rotation_after_the_ejection_time() -> None:
    clock = FakeClock()
    detector = OutlierDetector(clock=clock)
    hosts = instances(10)
    detector.filter(hosts)
    fail(detector, hosts[3])
    clock.advance(29.9)
    assert hosts[3] not in detector.filter(hosts)
    clock.advance(0.1)
    assert detector.filter(hosts) == hosts
    # Back with a clean slate: four more failures do not eject it again.
    fail(detector, hosts[3], 4)
    assert detector.filter(hosts) == hosts


def ejection_length(detector: OutlierDetector, clock: FakeClock, host: Instance) -> float:
    """Eject `host` now and measure, on the fake clock, how long it stays out."""
    fail(detector, host)
    assert detector.is_ejected(host)
    (status,) = [s for s in detector.statuses() if s.instance == host]
    clock.advance(status.ejected_for)
    assert not detector.is_ejected(host)
    return status.ejected_for


def test_ejection_time_grows_with_each_ejection_up_to_the_maximum() -> None:
    clock = FakeClock()
    detector = OutlierDetector(base_ejection_time=100.0, max_ejection_time=250.0, clock=clock)
    hosts = instances(10)
    detector.filter(hosts)
    lengths = [ejection_length(detector, clock, hosts[0]) for _ in range(4)]
    assert lengths == [100.0, 200.0, 250.0, 250.0]


def test_default_ejection_times_are_base_times_count() -> None:
    clock = FakeClock()
    detector = OutlierDetector(clock=clock)
    hosts = instances(10)
    detector.filter(hosts)
    assert [ejection_length(detector, clock, hosts[0]) for _ in range(3)] == [30.0, 60.0, 90.0]


def test_time_in_rotation_shrinks_the_next_ejection() -> None:
    clock = FakeClock()
    detector = OutlierDetector(clock=clock)  # interval 10 s: one step of forgiveness each
    hosts = instances(10)
    detector.filter(hosts)
    for _ in range(3):
        ejection_length(detector, clock, hosts[0])  # 30, 60, 90: backoff is now 3
    clock.advance(20.0)  # two intervals in rotation: backoff 3 -> 1, this ejection -> 2
    assert ejection_length(detector, clock, hosts[0]) == 60.0


def test_percentage_cap_limits_how_many_are_ejected() -> None:
    clock = FakeClock()
    detector = OutlierDetector(clock=clock)  # max_ejection_percent 10
    hosts = instances(20)
    detector.filter(hosts)
    for host in hosts[:4]:
        fail(detector, host)
    assert detector.filter(hosts) == hosts[2:]
    assert detector.ejections_overflow == 2
    # Once the first two are back, the others may go.
    clock.advance(30.0)
    fail(detector, hosts[2])
    assert detector.filter(hosts) == hosts[:2] + hosts[3:]


def test_one_or_two_hosts_are_never_ejected_with_the_default_cap() -> None:
    detector = OutlierDetector(clock=FakeClock())
    for count in (1, 2):
        hosts = instances(count, app_id=f"app{count}")
        detector.filter(hosts)
        fail(detector, hosts[0], 50)
        assert detector.filter(hosts) == hosts
    assert detector.ejections_enforced_total == 0


def test_always_eject_one_host_lets_the_first_ejection_through() -> None:
    detector = OutlierDetector(always_eject_one_host=True, clock=FakeClock())
    single = instances(1, app_id="single")
    detector.filter(single)
    fail(detector, single[0])
    assert detector.filter(single) == []  # the caller decides what to do (panic mode)
    pair = instances(2, app_id="pair")
    detector.filter(pair)
    fail(detector, pair[0])
    fail(detector, pair[1])
    assert detector.filter(pair) == [pair[1]]


def test_failures_while_ejected_are_ignored() -> None:
    clock = FakeClock()
    detector = OutlierDetector(clock=clock)
    hosts = instances(10)
    detector.filter(hosts)
    fail(detector, hosts[0])
    fail(detector, hosts[0], 20)
    assert detector.ejections_enforced_total == 1
    clock.advance(30.0)
    assert detector.filter(hosts) == hosts


def test_apps_are_capped_separately_and_vanished_instances_are_forgotten() -> None:
    detector = OutlierDetector(max_ejection_percent=50.0, clock=FakeClock())
    orders, billing = instances(2, "orders"), instances(2, "billing")
    detector.filter(orders + billing)
    fail(detector, orders[0])
    fail(detector, billing[0])
    assert detector.filter(orders + billing) == [orders[1], billing[1]]
    # orders[0] left the resolver's answer: its ejection goes with it, as in Envoy.
    assert detector.filter(orders[1:]) == orders[1:]
    assert detector.filter(orders) == orders


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_ejection_time"):
        OutlierDetector(base_ejection_time=30.0, max_ejection_time=10.0)
    with pytest.raises(ValueError, match="max_ejection_percent"):
        OutlierDetector(max_ejection_percent=120.0)
    with pytest.raises(ValueError, match="consecutive_failures"):
        OutlierDetector(consecutive_failures=0)
