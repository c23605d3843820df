"""The static resolver, build_resolver's choice of component, and configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from proxy.discovery.base import Instance, build_resolver, split_app_id
from proxy.discovery.dns import DnsResolver
from proxy.discovery.sqlite import SqliteResolver
from proxy.discovery.static import StaticResolver

APPS = {
    "apps": {
        "orders": ["127.0.0.1:50002", "127.0.0.2:50002"],
        "billing.prod": ["[::1]:50003"],
    }
}


async def test_static_resolves_apps_by_namespace(tmp_path: Path) -> None:
    resolver = build_resolver("static", APPS, data_dir=tmp_path)
    assert await resolver.resolve("orders", "default") == [
        Instance("orders", "default", "127.0.0.1", 50002),
        Instance("orders", "default", "127.0.0.2", 50002),
    ]
    assert await resolver.resolve("billing", "prod") == [Instance("billing", "prod", "::1", 50003)]
    assert await resolver.resolve("billing", "default") == []
    assert await resolver.resolve("nobody", "default") == []


async def test_static_has_nothing_to_register_or_run(tmp_path: Path) -> None:
    resolver = build_resolver("static", APPS, data_dir=tmp_path)
    await resolver.register(Instance("me", "default", "127.0.0.1", 1))
    assert await resolver.resolve("me", "default") == []
    async with trio.open_nursery() as nursery:
        await nursery.start(resolver.run)
        nursery.cancel_scope.cancel()
    await resolver.aclose()
    assert await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir())) == []


def test_build_resolver_picks_the_component(tmp_path: Path) -> None:
    assert isinstance(build_resolver("sqlite", {}, data_dir=tmp_path), SqliteResolver)
    assert isinstance(build_resolver("mdns", {}, data_dir=tmp_path), SqliteResolver)
    assert isinstance(build_resolver("dns", {}, data_dir=tmp_path), DnsResolver)
    assert isinstance(build_resolver("static", {}, data_dir=tmp_path), StaticResolver)
    with pytest.raises(ValueError, match="consul"):
        build_resolver("consul", {}, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("configuration", "named"),
    [
        ({"apps": {"orders": ["127.0.0.1"]}}, "apps.orders"),
        ({"apps": {"orders": "127.0.0.1:1"}}, "apps.orders"),
        ({"apps": {"a.b.c": ["127.0.0.1:1"]}}, "apps.a.b.c"),
        ({"apps": {"orders": ["127.0.0.1:0"]}}, "apps.orders"),
        ({"apps": ["orders"]}, "apps"),
        ({"app": {}}, "app"),
    ],
)
def test_static_configuration_errors_name_the_key(
    tmp_path: Path, configuration: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=f"nameResolution static: configuration key '{named}'"):
        build_resolver("static", configuration, data_dir=tmp_path)


def test_split_app_id_follows_dapr() -> None:
    assert split_app_id("orders") == ("orders", "default")
    assert split_app_id("orders", "prod") == ("orders", "prod")
    assert split_app_id("orders.staging") == ("orders", "staging")
    for bad in ("a.b.c", ".x", "x.", ""):
        with pytest.raises(ValueError, match="invalid app id"):
            split_app_id(bad)
