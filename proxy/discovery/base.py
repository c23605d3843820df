"""The name-resolution seam: an app's reachable sidecars, the Resolver protocol, its factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

__all__ = ["Instance", "ResolutionError", "Resolver", "build_resolver", "split_app_id"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One reachable sidecar of an app."""

    app_id: str
    namespace: str
    host: str
    port: int  # the sidecar's internal (mutual-TLS) port


class ResolutionError(Exception):
    """The resolver's backend failed (database, DNS server): distinct from "not found", []."""


class Resolver(Protocol):
    async def resolve(self, app_id: str, namespace: str) -> list[Instance]:
        """The live instances of an app; [] when the app is unknown."""
        ...

    async def register(self, instance: Instance) -> None:
        """Announce ourselves (a no-op for static and dns)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeats and cleanup until cancelled; backend failures are logged, never raised."""
        ...

    async def aclose(self) -> None:
        """Leave: delete our registration. Idempotent."""
        ...

    def invalidate(self, app_id: str, namespace: str) -> None:
        """Drop the cached answer, so the next resolve asks the backend (before a retry)."""
        ...


def split_app_id(key: str, default_namespace: str = "default") -> tuple[str, str]:
    """`app` or `app.namespace` (Dapr's rule: at most one dot) -> (app_id, namespace)."""
    app_id, dot, namespace = key.partition(".")
    if not app_id or (dot and not namespace) or "." in namespace:
        raise ValueError(f"invalid app id {key!r}: expected 'app' or 'app.namespace'")
    return app_id, namespace or default_namespace


def build_resolver(
    component: str, configuration: Mapping[str, object], *, data_dir: Path
) -> Resolver:
    """Build the resolver named by Dapr's `spec.nameResolution.component`.

    Components: `sqlite` (the embedded default: sidecars on one host share a database file
    under `data_dir`), `static` (a fixed map) and `dns` (A/AAAA or SRV records, as on Kubernetes
    with headless services). `mdns`, Dapr's self-hosted default, is accepted as an alias for
    `sqlite`: both find the other sidecars on this machine without configuration.

    Raises ValueError naming the component and the bad key when the configuration is wrong.
    Does no I/O: databases are opened and DNS servers asked on first use.
    """
    # Imported here, each backend only when named: they import Instance from this module, and
    # `dns` brings dnspython, which a sidecar that does not resolve through DNS never needs.
    match component:
        case "sqlite" | "mdns":
            from proxy.discovery.sqlite import SqliteResolver

            return SqliteResolver.from_config(configuration, data_dir=data_dir)
        case "static":
            from proxy.discovery.static import StaticResolver

            return StaticResolver.from_config(configuration)
        case "dns":
            from proxy.discovery.dns import DnsResolver

            return DnsResolver.from_config(configuration)
    raise ValueError(
        f"nameResolution: unknown component {component!r} (expected sqlite, mdns, static or dns)"
    )
