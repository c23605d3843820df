"""The `static` resolver: a fixed map from app id (and namespace) to sidecar addresses."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from config.base import parse_address
from proxy.discovery.base import Instance, split_app_id
from proxy.discovery.settings import ConfigReader

__all__ = ["StaticResolver"]


class StaticResolver:
    """Answers from configuration only; register, run and aclose have nothing to do.

    Configuration: `{"apps": {"orders": ["127.0.0.1:50002"], "billing.prod": ["10.0.0.7:50002"]}}`;
    a key is `app` (namespace `default`) or `app.namespace`.
    """

    def __init__(self, apps: Mapping[tuple[str, str], list[Instance]]) -> None:
        self._apps = {key: tuple(instances) for key, instances in apps.items()}

    @classmethod
    def from_config(cls, configuration: Mapping[str, object]) -> StaticResolver:
        reader = ConfigReader("static", configuration)
        apps: dict[tuple[str, str], list[Instance]] = {}
        for key, addresses in reader.mapping("apps").items():
            where = f"apps.{key}"
            if not isinstance(key, str):
                raise reader.error(where, "an app id must be a string")
            try:
                app_id, namespace = split_app_id(key)
            except ValueError as exc:
                raise reader.error(where, str(exc)) from None
            if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
                raise reader.error(where, f"expected a list of host:port, got {addresses!r}")
            instances = apps.setdefault((app_id, namespace), [])
            for address in addresses:
                try:
                    host, port = parse_address(address)
                except ValueError as exc:
                    raise reader.error(where, str(exc)) from None
                if port == 0:
                    raise reader.error(where, f"port 0 cannot be reached in {address!r}")
                instance = Instance(app_id, namespace, host, port)
                if instance not in instances:
                    instances.append(instance)
        reader.finish()
        return cls(apps)

    async def resolve(self, app_id: str, namespace: str) -> list[Instance]:
        return list(self._apps.get((app_id, namespace), ()))

    async def register(self, instance: Instance) -> None:
        """Nothing to announce: peers find us in their own configuration."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def aclose(self) -> None:
        """Nothing to leave."""

    def invalidate(self, app_id: str, namespace: str) -> None:
        """Nothing is cached."""
