"""The dns resolver against a real UDP DNS server on 127.0.0.1, and getaddrinfo for localhost."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from proxy.discovery.base import Instance, ResolutionError, build_resolver
from proxy.discovery.dns import DnsResolver
from tests.discovery.dns_server import DnsServer
from tests.discovery.helpers import FakeClock

ORDERS_NAME = "orders-dapr.default.svc.cluster.local"
ORDERS_SRV = "_dapr-internal._tcp.orders-dapr.default.svc.cluster.local"


@pytest.fixture
async def server(nursery: trio.Nursery) -> DnsServer:
    dns_server = DnsServer()
    await nursery.start(dns_server.serve)
    return dns_server


def resolver_for(server: DnsServer, clock: FakeClock, **configuration: object) -> DnsResolver:
    return DnsResolver.from_config(
        {"nameservers": [server.nameserver], "timeout": "2s", **configuration}, clock=clock
    )


async def test_a_records_give_the_configured_port(server: DnsServer) -> None:
    server.add(ORDERS_NAME, "A", "10.1.0.1", "10.1.0.2")
    server.add(ORDERS_NAME, "AAAA", "fd00::1")
    resolver = resolver_for(server, FakeClock(), port=50010)
    assert await resolver.resolve("orders", "default") == [
        Instance("orders", "default", "10.1.0.1", 50010),
        Instance("orders", "default", "10.1.0.2", 50010),
        Instance("orders", "default", "fd00::1", 50010),
    ]
    assert await resolver.resolve("billing", "default") == []  # NXDOMAIN
    assert await resolver.resolve("orders", "prod") == []


async def test_the_template_names_the_record(server: DnsServer) -> None:
    server.add("orders.prod.mesh.test", "A", "10.2.0.9")
    resolver = resolver_for(server, FakeClock(), template="{app_id}.{namespace}.mesh.test")
    found = await resolver.resolve("orders", "prod")
    assert found == [Instance("orders", "prod", "10.2.0.9", 50002)]


async def test_answers_are_cached_for_their_ttl_clamped(server: DnsServer) -> None:
    clock = FakeClock()
    server.add(ORDERS_NAME, "A", "10.1.0.1")
    resolver = resolver_for(server, clock)
    asked = (f"{ORDERS_NAME}.", "A")

    server.ttl = 0  # clamped up to 1 s
    await resolver.resolve("orders", "default")
    clock.advance(0.9)
    await resolver.resolve("orders", "default")
    assert server.queries[asked] == 1
    clock.advance(0.1)
    await resolver.resolve("orders", "default")
    assert server.queries[asked] == 2

    server.ttl = 3600  # clamped down to 30 s
    clock.advance(1.0)
    await resolver.resolve("orders", "default")
    assert server.queries[asked] == 3
    clock.advance(29.9)
    await resolver.resolve("orders", "default")
    assert server.queries[asked] == 3
    clock.advance(0.1)
    await resolver.resolve("orders", "default")
    assert server.queries[asked] == 4

    resolver.invalidate("orders", "default")
    await resolver.resolve("orders", "default")
    assert server.queries[asked] == 5


async def test_srv_records_give_hosts_and_ports(server: DnsServer) -> None:
    server.add(
        ORDERS_SRV,
        "SRV",
        "0 50 50011 orders-0.pods.test.",
        "0 50 50012 orders-1.pods.test.",
        "10 50 50013 orders-standby.pods.test.",  # a higher priority number: a fallback only
    )
    server.add_glue("orders-0.pods.test", "10.3.0.1")
    server.add("orders-1.pods.test", "A", "10.3.0.2")  # no glue: looked up separately
    resolver = resolver_for(server, FakeClock(), srv=True)
    assert await resolver.resolve("orders", "default") == [
        Instance("orders", "default", "10.3.0.1", 50011),
        Instance("orders", "default", "10.3.0.2", 50012),
    ]
    assert server.queries[("orders-0.pods.test.", "A")] == 0
    assert server.queries[("orders-1.pods.test.", "A")] == 1
    assert server.queries[("orders-standby.pods.test.", "A")] == 0


async def test_srv_template_and_the_not_available_target(server: DnsServer) -> None:
    server.add("_mesh._tcp.orders.default.test", "SRV", "0 0 0 .")
    resolver = resolver_for(
        server, FakeClock(), srv="true", srvTemplate="_mesh._tcp.{app_id}.{namespace}.test"
    )
    assert await resolver.resolve("orders", "default") == []
    assert await resolver.resolve("billing", "default") == []


async def test_server_failure_is_a_resolution_error(server: DnsServer) -> None:
    server.servfail = True
    resolver = resolver_for(server, FakeClock())
    with pytest.raises(ResolutionError, match=ORDERS_NAME):
        await resolver.resolve("orders", "default")


async def test_app_ids_that_are_not_one_label_are_not_looked_up(server: DnsServer) -> None:
    resolver = resolver_for(server, FakeClock())
    for app_id in ("evil.example.com", "", "a" * 64, "x y"):
        assert await resolver.resolve(app_id, "default") == []
    assert sum(server.queries.values()) == 0


async def test_getaddrinfo_path_resolves_localhost(tmp_path: Path) -> None:
    resolver = build_resolver("dns", {"template": "{app_id}", "port": 50020}, data_dir=tmp_path)
    found = await resolver.resolve("localhost", "default")
    assert Instance("localhost", "default", "127.0.0.1", 50020) in found
    assert all(instance.port == 50020 for instance in found)
    await resolver.register(found[0])  # nothing to announce
    await resolver.aclose()


@pytest.mark.parametrize(
    ("configuration", "named"),
    [
        ({"template": "{namespace}.svc"}, "template"),
        ({"template": "{app_id}.{cluster}"}, "template"),
        ({"srvTemplate": "_x._tcp.{app}"}, "srvTemplate"),
        ({"port": 70000}, "port"),
        ({"nameservers": ["dns.example.com"]}, "nameservers"),
        ({"nameservers": ["127.0.0.1:abc"]}, "nameservers"),
        ({"srv": "yes"}, "srv"),
        ({"ttl": "5s"}, "ttl"),
    ],
)
def test_configuration_errors_name_the_key(
    tmp_path: Path, configuration: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=f"nameResolution dns: configuration key '{named}'"):
        build_resolver("dns", configuration, data_dir=tmp_path)


def test_nameservers_default_to_port_53() -> None:
    resolver = DnsResolver.from_config({"nameservers": "10.0.0.10, ::1, [::1]:5353"})
    assert resolver.settings.nameservers == (("10.0.0.10", 53), ("::1", 53), ("::1", 5353))
