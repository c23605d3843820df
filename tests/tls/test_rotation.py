"""Certificate rotation: at half-life, without dropping connections, retried when it fails."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing

from proxy.tls.errors import WorkloadCertError
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload import RETRY_INTERVAL, WorkloadIdentity
from proxy.tls.workload_cert import WorkloadCert, utc_now
from tests.tls.helpers import (
    ShiftedClock,
    attempt_tls,
    echo_once,
    new_ca,
    peer_serial,
    sid,
    wait_until,
)


async def test_rotation_keeps_old_connections_and_new_ones_see_the_new_cert(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    ca_clock = ShiftedClock()
    ca = new_ca(tmp_path, ca_clock)
    orders = WorkloadIdentity.issue(sid("orders"), ca.issue)
    # Billing's first certificate was issued 13 hours ago: past half-life, so due for renewal.
    ca_clock.offset = -timedelta(hours=13)
    billing = WorkloadIdentity.issue(sid("billing"), ca.issue)
    ca_clock.offset = timedelta(0)
    old_serial = billing.current.serial
    assert billing.current.half_life < utc_now()

    async with attempt_tls(billing.server_context(), orders.client_context()) as before:
        assert before.client is not None
        assert before.server is not None
        assert peer_serial(before.client) == old_serial

        await nursery.start(billing.run_rotation)
        await wait_until(lambda: billing.rotations == 1, within=10, poll=0.01)
        await orders.rotate()
        assert billing.current.serial != old_serial
        assert billing.current.half_life > utc_now()

        await echo_once(before.client, before.server, b"still here after rotation")
        await echo_once(before.server, before.client, b"and back")

        async with attempt_tls(billing.server_context(), orders.client_context()) as after:
            assert after.client is not None
            assert after.server is not None
            assert peer_serial(after.client) == billing.current.serial
            assert peer_serial(after.server) == orders.current.serial
            assert billing.verify_peer(after.server) == sid("orders")
            await echo_once(after.client, after.server, b"new connection")

        await echo_once(before.client, before.server, b"old connection, once more")
    assert (billing.rotations, billing.rotation_failures) == (1, 0)
    assert (orders.rotations, orders.rotation_failures) == (1, 0)


DAY = 24 * 3600.0
STEP = 60.0  # virtual seconds per jump of the mock clock


class WallClock:
    """Wall time that follows trio's (virtual) clock; readable from worker threads."""

    def __init__(self, mock: trio.testing.MockClock) -> None:
        self._mock = mock
        self._start = utc_now()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=self._mock.current_time())


async def settle() -> None:
    """Wait until every task is blocked and no worker thread is running (trio's recipe)."""
    while True:
        await trio.testing.wait_all_threads_completed()
        await trio.testing.wait_all_tasks_blocked()
        if trio.testing.active_thread_count() == 0:
            return


async def advance_until(
    clock: trio.testing.MockClock, done: Callable[[], bool], *, step: float, limit: float
) -> None:
    """Move virtual time forward ``step`` at a time, settling in between, until ``done()``.

    Time is moved by hand rather than by autojump: an autojump clock leaps ahead while a
    worker thread runs, because trio cannot see threads, so issuance would happen "late".
    """
    await settle()
    elapsed = 0.0
    while not done():
        assert elapsed < limit, f"not done after {limit}s of virtual time"
        clock.jump(step)
        elapsed += step
        await settle()


async def test_renews_at_half_life_of_each_certificate(
    tmp_path: Path, mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    wall = WallClock(mock_clock)
    ca = new_ca(tmp_path, wall)
    called_at: list[datetime] = []

    def issuer(spiffe_id: SpiffeId) -> WorkloadCert:
        called_at.append(wall())
        return ca.issue(spiffe_id)

    orders = WorkloadIdentity.issue(sid("orders"), issuer, clock=wall)
    certs = [orders.current]
    await nursery.start(orders.run_rotation)
    for count in (1, 2):
        await advance_until(mock_clock, lambda n=count: orders.rotations == n, step=STEP, limit=DAY)
        certs.append(orders.current)

    assert len(called_at) == 3
    for cert, renewed_at in zip(certs, called_at[1:], strict=False):
        assert cert.half_life <= renewed_at < cert.half_life + timedelta(seconds=STEP)
    assert len({cert.serial for cert in certs}) == 3
    assert orders.rotation_failures == 0


async def test_a_failing_issuer_is_retried_every_ten_seconds_and_counted(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wall = WallClock(mock_clock)
    ca = new_ca(tmp_path, wall)
    attempts: list[datetime] = []

    def flaky(spiffe_id: SpiffeId) -> WorkloadCert:
        attempts.append(wall())
        if len(attempts) <= 2:
            raise OSError("CA unreachable")
        return ca.issue(spiffe_id)

    orders = WorkloadIdentity(ca.issue(sid("orders")), flaky, clock=wall)
    first = orders.current
    await nursery.start(orders.run_rotation)
    with caplog.at_level(logging.WARNING, logger="proxy.tls.workload"):
        await advance_until(mock_clock, lambda: orders.rotations == 1, step=1, limit=DAY)

    assert orders.rotation_failures == 2
    assert len(attempts) == 3
    assert first.half_life <= attempts[0]
    for earlier, later in itertools.pairwise(attempts):
        assert timedelta(seconds=RETRY_INTERVAL) <= later - earlier < timedelta(seconds=11)
    assert orders.current.serial != first.serial
    failures = [r for r in caplog.records if "CA unreachable" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.levelno == logging.WARNING for r in failures)


async def test_a_certificate_for_another_identity_is_not_installed(
    tmp_path: Path,
) -> None:
    ca = new_ca(tmp_path)
    wrong = ca.issue(sid("billing"))
    orders = WorkloadIdentity(ca.issue(sid("orders")), lambda _: wrong)
    before = orders.current
    with pytest.raises(WorkloadCertError, match="cannot serve as"):
        await orders.rotate()
    assert orders.current == before
    assert (orders.rotations, orders.rotation_failures) == (0, 1)


async def test_a_chain_whose_key_does_not_match_is_not_installed(tmp_path: Path) -> None:
    ca = new_ca(tmp_path)
    good, other = ca.issue(sid("orders")), ca.issue(sid("orders"))
    mismatched = WorkloadCert(
        spiffe_id=good.spiffe_id,
        key_pem=other.key_pem,
        cert_chain_pem=good.cert_chain_pem,
        trust_anchors_pem=good.trust_anchors_pem,
        not_before=good.not_before,
        not_after=good.not_after,
        serial=good.serial,
    )
    orders = WorkloadIdentity(good, lambda _: mismatched)
    with pytest.raises(WorkloadCertError, match="spiffe://public/ns/default/orders"):
        await orders.rotate()
    assert orders.current == good
