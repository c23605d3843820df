"""Other sidecars: found by name resolution, reached over HTTP/2 with mutual TLS, a cluster each."""

from __future__ import annotations

import itertools
from functools import partial

from config import schema
from config.base import Duration
from exporters.telemetry import Telemetry
from proxy.discovery.base import Instance, Resolver
from proxy.discovery.outlier import OutlierDetector
from proxy.http.errors import UpstreamConnectFailure
from proxy.stats import ClusterStats, Stats
from proxy.tls.errors import PeerIdentityError
from proxy.tls.spiffe import SpiffeId
from proxy.tls.stream import TlsStream
from proxy.tls.workload import WorkloadIdentity
from proxy.upstream.cluster import UpstreamCluster
from proxy.upstream.connect import Connector
from proxy.upstream.manager import ClusterManager

# Dapr closes idle sidecar connections after DAPR_GRPC_MAX_CONN_IDLE, 3 minutes by default.
PEER_IDLE_TIMEOUT = Duration(180.0)
PEER_CONNECT_TIMEOUT = Duration(5.0)


class Peers:
    """Picks an instance of a target app and the (multiplexed, reused) cluster that reaches it."""

    def __init__(
        self,
        clusters: ClusterManager,
        stats: Stats,
        telemetry: Telemetry | None,
        identity: WorkloadIdentity,
        resolver: Resolver,
        trust_domain: str,
    ) -> None:
        self._clusters = clusters
        self._stats = stats
        self._telemetry = telemetry
        self._identity = identity
        self._resolver = resolver
        self._trust_domain = trust_domain
        self._by_instance: dict[Instance, UpstreamCluster] = {}
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        # Envoy caps ejections at 10 % of an app's hosts; sidecar apps often run 2 or 3 instances.
        self.outliers = OutlierDetector(max_ejection_percent=50)

    async def candidates(self, app_id: str, namespace: str) -> list[Instance]:
        """Instances in rotation (all of them if every one is ejected: Envoy's panic mode)."""
        found = await self._resolver.resolve(app_id, namespace)
        return self.outliers.filter(found) or found

    def pick(self, instances: list[Instance], app_id: str, namespace: str) -> Instance:
        turn = self._turns.setdefault((app_id, namespace), itertools.count())
        return instances[next(turn) % len(instances)]

    def cluster(self, instance: Instance) -> UpstreamCluster:
        found = self._by_instance.get(instance)
        if found is not None:
            return found
        # Stat names are dotted paths: no dots or colons inside the cluster's name.
        where = instance.host.replace(".", "-").replace(":", "-")
        name = f"dapr-{instance.app_id}-{instance.namespace}-{where}-{instance.port}"
        config = schema.Cluster(
            name=name,
            endpoints=[_endpoint(instance)],
            protocol="h2",
            connect_timeout=PEER_CONNECT_TIMEOUT,
            idle_timeout=PEER_IDLE_TIMEOUT,
        )
        expected = SpiffeId(self._trust_domain, instance.namespace, instance.app_id)
        connector = Connector(
            config,
            ClusterStats(self._stats, name),
            ssl_context=self._identity.client_context(),
            check_peer=partial(_check_peer, self._identity, expected),
        )
        cluster = UpstreamCluster(config, self._stats, self._telemetry, connector)
        self._clusters.add(cluster)
        self._by_instance[instance] = cluster
        return cluster


def _endpoint(instance: Instance) -> str:
    host = f"[{instance.host}]" if ":" in instance.host else instance.host
    return f"{host}:{instance.port}"


def _check_peer(identity: WorkloadIdentity, expected: SpiffeId, stream: TlsStream) -> None:
    try:
        identity.verify_peer(stream, expected)
    except PeerIdentityError as exc:
        raise UpstreamConnectFailure(f"peer identity refused: {exc}") from exc
