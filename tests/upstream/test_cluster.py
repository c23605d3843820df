"""Cluster behaviour: load balancing, circuit breaker, connect timeouts, idle expiry, shutdown."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from config.schema import Cluster, Duration, UpstreamTls
from proxy.http.errors import NoHealthyUpstream, UpstreamConnectFailure, UpstreamOverflow
from proxy.stats import ClusterStats, Stats
from proxy.upstream.balancer import Host, LeastRequest, Load, RoundRobin
from tests.upstream.helpers import cluster, counter, read_body, request, running, upstream
from tests.upstream.servers import H1Exchange, h1_server


async def test_round_robin_alternates_between_hosts() -> None:
    async with h1_server() as a, h1_server() as b:
        async with running(cluster(a.port, b.port)) as (manager, _):
            hosts = []
            for _ in range(4):
                req = request()
                await read_body(await upstream(manager).send(req))
                hosts.append(req.info.upstream_host)
        assert hosts == [f"127.0.0.1:{p}" for p in (a.port, b.port, a.port, b.port)]
        assert (a.requests, b.requests) == (2, 2)


async def test_least_request_prefers_the_idle_host() -> None:
    gate = trio.Event()
    parked = trio.Event()
    busy_port: list[int] = []

    async def handler(ex: H1Exchange) -> None:
        if not busy_port:  # the very first request, wherever it lands, stays in flight
            busy_port.append(ex.server.port)
            parked.set()
            await gate.wait()
        await ex.respond(200, b"ok")

    async with h1_server(handler) as a, h1_server(handler) as b:
        config = cluster(a.port, b.port, lb_policy="least_request")
        async with running(config) as (manager, _), trio.open_nursery() as nursery:
            backend = upstream(manager)

            async def first() -> None:
                await read_body(await backend.send(request()))

            nursery.start_soon(first)
            with trio.fail_after(10):
                await parked.wait()
            idle_port = b.port if busy_port == [a.port] else a.port
            for _ in range(6):
                req = request()
                await read_body(await backend.send(req))
                assert req.info.upstream_host == f"127.0.0.1:{idle_port}"
            gate.set()


def _hosts(n: int) -> Sequence[Host]:
    stats = ClusterStats(Stats(), "c")
    load = Load()
    return [Host(f"10.0.0.{i}:80", load, stats) for i in range(n)]


def test_least_request_is_power_of_two_choices() -> None:
    hosts = _hosts(3)
    hosts[0].rq_active = 5
    hosts[1].rq_active = 1
    hosts[2].rq_active = 3
    balancer = LeastRequest(hosts, random.Random(7))
    picks = [balancer.pick() for _ in range(300)]
    assert hosts[0] not in picks  # the busiest host loses every pair it is drawn in
    assert picks.count(hosts[1]) > picks.count(hosts[2])


def test_round_robin_cycles() -> None:
    hosts = _hosts(3)
    balancer = RoundRobin(hosts)
    assert [balancer.pick() for _ in range(6)] == [*hosts, *hosts]


async def test_overflow_is_rejected_immediately() -> None:
    gate = trio.Event()

    async def slow(ex: H1Exchange) -> None:
        await gate.wait()
        await ex.respond(200, b"ok")

    async with (
        h1_server(slow) as server,
        running(cluster(server.port, max_requests=1)) as (manager, stats),
    ):
        backend = upstream(manager)
        async with trio.open_nursery() as nursery:

            async def first() -> None:
                await read_body(await backend.send(request()))

            nursery.start_soon(first)
            await server.wait_for(lambda: server.requests == 1)
            with pytest.raises(UpstreamOverflow):
                await backend.send(request())
            gate.set()
        assert counter(stats, "rq_pending_overflow") == 1
        assert await read_body(await backend.send(request())) == b"ok"


async def test_connect_timeout_during_resolution(autojump_clock: trio.testing.MockClock) -> None:
    class HangingResolver(trio.abc.HostnameResolver):
        async def getaddrinfo(self, *args: object, **kwargs: object) -> list[object]:  # type: ignore[override]
            await trio.sleep_forever()
            raise AssertionError

        async def getnameinfo(self, *args: object) -> tuple[str, str]:
            raise AssertionError

    trio.socket.set_custom_hostname_resolver(HangingResolver())
    try:
        config = Cluster(
            name="slow", endpoints=["unresolvable.test:80"], connect_timeout=Duration(2.0)
        )
        async with running(config) as (manager, stats):
            with pytest.raises(UpstreamConnectFailure, match="timed out"):
                await upstream(manager, "slow").send(request())
            assert counter(stats, "cx_connect_timeout", "slow") == 1
            assert counter(stats, "cx_connect_fail", "slow") == 0
    finally:
        trio.socket.set_custom_hostname_resolver(None)


async def test_connect_timeout_covers_a_stalled_tls_handshake() -> None:
    accepted: list[trio.SocketStream] = []

    async def silent(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        try:
            await trio.sleep_forever()
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, silent, 0)
        port = listeners[0].socket.getsockname()[1]
        config = cluster(port, protocol="h2", tls=UpstreamTls(verify=False), connect_timeout=0.2)
        async with running(config) as (manager, stats):
            with pytest.raises(UpstreamConnectFailure):
                await upstream(manager).send(request())
            assert counter(stats, "cx_connect_timeout") == 1
        nursery.cancel_scope.cancel()
    assert len(accepted) == 1


async def test_expired_idle_connections_are_not_reused() -> None:
    async with (
        h1_server() as server,
        running(cluster(server.port, idle_timeout=0)) as (manager, _),
    ):
        for _ in range(2):
            await read_body(await upstream(manager).send(request()))
        assert server.connections == 2
        await server.wait_for(lambda: server.closed == 1)


async def test_reaper_closes_idle_connections() -> None:
    async with (
        h1_server() as server,
        running(cluster(server.port, idle_timeout=0.05)) as (manager, _),
    ):
        await read_body(await upstream(manager).send(request()))
        await server.wait_for(lambda: server.closed == 1)
        assert manager.snapshot()[0]["hosts"][0]["cx_active"] == 0  # type: ignore[index]


async def test_manager_exit_closes_every_connection() -> None:
    async with h1_server() as server:
        async with running(cluster(server.port)) as (manager, stats):
            await read_body(await upstream(manager).send(request()))
            assert stats.gauge("cluster.backend.upstream_cx_active").value == 1
        assert stats.gauge("cluster.backend.upstream_cx_active").value == 0
        await server.wait_for(lambda: server.closed == 1)


async def test_unknown_cluster_and_empty_cluster() -> None:
    async with running(cluster(name="empty")) as (manager, _):
        assert manager.get("missing") is None
        with pytest.raises(NoHealthyUpstream):
            await upstream(manager, "empty").send(request())
        assert manager.snapshot() == [
            {
                "name": "empty",
                "protocol": "http1",
                "lb_policy": "round_robin",
                "rq_active": 0,
                "hosts": [],
            }
        ]
