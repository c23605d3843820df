"""UpstreamCluster: circuit breaker, load balancing and the one transparent retry per request."""

from __future__ import annotations

from functools import partial

import trio

from config.schema import Cluster
from exporters.telemetry import Telemetry
from filters.tracing.client import Upstream, observed_attempt
from proxy.http.errors import NoHealthyUpstream, ProxyError, UpstreamOverflow, UpstreamReset
from proxy.http.model import Request, Response
from proxy.http1.codec import AUTO, Codec
from proxy.stats import ClusterStats, Stats
from proxy.upstream.balancer import Host, Load, make_balancer
from proxy.upstream.connect import Connector
from proxy.upstream.outgoing import Outgoing, RetryableReset, prepare
from proxy.upstream.pool import H1Pool, H2Pool


class UpstreamCluster:
    """One configured cluster: its hosts, their pools and the counters they bump."""

    def __init__(
        self,
        config: Cluster,
        stats: Stats,
        telemetry: Telemetry | None = None,
        connector: Connector | None = None,
        codec: Codec = AUTO,
    ) -> None:
        self.name = config.name
        self._telemetry = telemetry
        self.config = config
        self.stats = ClusterStats(stats, config.name)
        self.load = Load()
        self._max_requests = config.max_requests
        if connector is None:
            connector = Connector(config, self.stats)
        self.hosts: list[Host] = []
        self._upstreams: dict[Host, Upstream] = {}  # only with telemetry
        for endpoint in config.endpoints:
            host = Host(endpoint, self.load, self.stats)
            if config.protocol == "http1":
                host.pool = H1Pool(
                    host, connector, config.max_connections, float(config.idle_timeout), codec
                )
            else:
                host.pool = H2Pool(
                    host,
                    connector,
                    config.max_connections,
                    config.max_concurrent_streams,
                    float(config.idle_timeout),
                )
            self.hosts.append(host)
            if telemetry is not None:
                tls = config.tls is not None or config.protocol == "h2"
                self._upstreams[host] = Upstream(config.name, host.host, host.port, tls)
        self._balancer = make_balancer(config.lb_policy, self.hosts)

    def attach(self, nursery: trio.Nursery) -> None:
        """Give every pool the nursery its connection tasks run in."""
        for host in self.hosts:
            host.pool.nursery = nursery

    async def send(self, request: Request) -> Response:
        """Forward `request` to a host; the Response body streams from the upstream socket."""
        stats = self.stats
        if self.load.active >= self._max_requests:
            stats.rq_overflow.inc()
            raise UpstreamOverflow(f"cluster {self.name} has {self.load.active} requests in flight")
        if not self.hosts:
            raise NoHealthyUpstream(f"cluster {self.name} has no endpoints")
        host = self._balancer.pick()
        info = request.info
        info.upstream_cluster = self.name
        info.upstream_host = host.address
        host.begin()
        try:
            out = await prepare(request.body)
        except BaseException:
            host.end(False)
            raise
        try:
            try:
                response = await self._attempt(request, host, out, False)
            except RetryableReset:
                if not out.replayable:
                    raise
                stats.rq_retry.inc()
                host.begin()
                response = await self._attempt(request, host, out, True)
        except ProxyError as exc:
            if isinstance(exc, UpstreamReset):
                stats.rq_reset.inc()
            raise
        stats.response(response.status)
        if response.status >= 500:
            host.rq_error += 1
        return response

    async def _attempt(self, request: Request, host: Host, out: Outgoing, retry: bool) -> Response:
        """One exchange with `host`; observed (span, duration) when telemetry is configured."""
        telemetry = self._telemetry
        if telemetry is None:
            return await host.pool.send(request, out, retry)
        return await observed_attempt(
            telemetry,
            request,
            self._upstreams[host],
            retry,
            partial(host.pool.send, request, out, retry),
        )

    async def reap(self, now: float) -> None:
        for host in self.hosts:
            await host.pool.reap(now)

    async def aclose(self) -> None:
        for host in self.hosts:
            await host.pool.aclose()

    def snapshot(self) -> dict[str, object]:
        return {
            "name": self.name,
            "protocol": self.config.protocol,
            "lb_policy": self.config.lb_policy,
            "rq_active": self.load.active,
            "hosts": [
                {
                    "address": host.address,
                    "cx_active": host.cx_active,
                    "rq_active": host.rq_active,
                    "rq_total": host.rq_total,
                    "rq_error": host.rq_error,
                    "healthy": host.healthy,
                }
                for host in self.hosts
            ],
        }
