"""ClusterManager: every cluster's pools, and the nursery their connection tasks live in."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import trio

from config.schema import Cluster
from exporters.telemetry import Telemetry
from proxy.http1.codec import AUTO, Codec
from proxy.stats import Stats
from proxy.upstream.cluster import UpstreamCluster

# Bound on closing every upstream connection at shutdown.
SHUTDOWN_GRACE = 5.0


class ClusterManager:
    """Owns every cluster's pools; an async context manager that owns a nursery for connection
    reader/upload/reaper tasks."""

    def __init__(
        self,
        clusters: Sequence[Cluster],
        stats: Stats,
        telemetry: Telemetry | None = None,
        codec: Codec = AUTO,
    ) -> None:
        self._clusters = {
            c.name: UpstreamCluster(c, stats, telemetry, codec=codec) for c in clusters
        }
        timeouts = [float(c.idle_timeout) for c in clusters if c.idle_timeout > 0]
        # Idle connections are also checked lazily on checkout; the sweep bounds how long a dead
        # idle connection holds a socket.
        self._reap_every = min([*timeouts, 60.0]) / 2 if timeouts else 30.0
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> ClusterManager:
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._nursery_manager, self._nursery = manager, nursery
        for cluster in self._clusters.values():
            cluster.attach(nursery)
        nursery.start_soon(self._reaper)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._nursery_manager is not None
        assert self._nursery is not None
        with trio.move_on_after(SHUTDOWN_GRACE, shield=True):
            for cluster in list(self._clusters.values()):
                await cluster.aclose()
        self._nursery.cancel_scope.cancel()
        manager, self._nursery_manager, self._nursery = self._nursery_manager, None, None
        return bool(await manager.__aexit__(exc_type, exc, tb))

    async def _reaper(self) -> None:
        while True:
            await trio.sleep(self._reap_every)
            now = trio.current_time()
            for cluster in list(self._clusters.values()):  # add() may run meanwhile
                await cluster.reap(now)

    def get(self, name: str) -> UpstreamCluster | None:
        return self._clusters.get(name)

    def add(self, cluster: UpstreamCluster) -> None:
        """A cluster made at run time (e.g. another sidecar found by name resolution)."""
        if cluster.name in self._clusters:
            raise ValueError(f"cluster {cluster.name!r} already exists")
        self._clusters[cluster.name] = cluster
        if self._nursery is not None:
            cluster.attach(self._nursery)

    def snapshot(self) -> list[dict[str, object]]:
        """Per cluster, per host: address, cx_active, rq_active, rq_total, rq_error, healthy."""
        return [cluster.snapshot() for cluster in self._clusters.values()]
