"""The sidecar's live state: identity, name resolution, peers, app readiness and metadata."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from config import schema
from config.dapr.resolve import resolve_app_policy
from config.dapr.resources import load_resources
from exporters.dapr_metrics import DaprMetrics
from exporters.telemetry import Telemetry
from filters.dapr.resiliency import AppResilience
from filters.pubsub.components import PubSubs  # pub/sub (S4)
from filters.pubsub.http_app import HttpAppChannel  # pub/sub (S4)
from filters.pubsub.subscriber import Subscriber, discover_http  # pub/sub (S4)
from filters.pubsub.subscriptions import TopicSubscription  # pub/sub (S4)
from filters.state.registry import StateStores  # state management (S3)
from proxy.discovery.base import Instance, Resolver, build_resolver
from proxy.sidecar.access import AccessPolicy
from proxy.sidecar.identity import given_identity, make_identity
from proxy.sidecar.peers import Peers
from proxy.sidecar.role import SidecarRole
from proxy.stats import Stats
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload import WorkloadIdentity
from proxy.upstream.cluster import UpstreamCluster
from proxy.upstream.manager import ClusterManager
from proxy.version import VERSION

if TYPE_CHECKING:
    from filters.pubsub.grpc_app import GrpcAppChannel  # pub/sub (S4)

log = logging.getLogger("meshwire.sidecar")

APP_PROBE_INTERVAL = 0.05  # seconds between attempts to reach the app's port at start-up


class SidecarRuntime:
    """Everything the Dapr terminals share; `run` does the background work while serving."""

    def __init__(
        self,
        sidecar: schema.Sidecar,
        clusters: ClusterManager,
        stats: Stats,
        telemetry: Telemetry | None,
        environ: Mapping[str, str] = os.environ,
        role: SidecarRole = SidecarRole(),  # noqa: B008 (frozen)
    ) -> None:
        self.config = sidecar
        self.role = role
        self.app_id = sidecar.app_id
        self.hostname = socket.gethostname()
        self.namespace = sidecar.namespace
        self.spiffe_id = SpiffeId(sidecar.mtls.trust_domain, sidecar.namespace, sidecar.app_id)
        self.identity: WorkloadIdentity = (
            make_identity(sidecar.mtls, self.spiffe_id, environ)
            if role.certificate is None
            else given_identity(role.certificate)
        )
        self.resolver: Resolver = build_resolver(
            sidecar.name_resolution.component,
            sidecar.name_resolution.configuration,
            data_dir=Path(sidecar.data_dir),
        )
        self.peers = Peers(
            clusters, stats, telemetry, self.identity, self.resolver, sidecar.mtls.trust_domain
        )
        self.app: UpstreamCluster | None = None
        self.app_slots: trio.Semaphore | None = None
        if sidecar.app is not None:
            self.app = clusters.get(sidecar.app.cluster)
            if sidecar.app.max_concurrency > 0:
                self.app_slots = trio.Semaphore(sidecar.app.max_concurrency)
        self.access = AccessPolicy.from_file(sidecar.config_file, sidecar.namespace)
        resources = load_resources(
            [Path(p) for p in sidecar.resources_paths], sidecar.app_id, sidecar.namespace
        )
        self.resiliencies = resources.resiliencies
        self.components = resources.components  # served by later building blocks
        # State management (S3): stores from the `state.*` Components, opened by run().
        self.state = StateStores(
            self.components, sidecar.app_id, sidecar.namespace, Path(sidecar.data_dir)
        )
        self.metrics = DaprMetrics(sidecar.app_id)
        # Pub/sub (S4): brokers from the `pubsub.*` Components, subscriptions once the app is up.
        self.spans = telemetry.spans if telemetry is not None else None
        self.pubsub = PubSubs(
            self.components, sidecar.app_id, sidecar.namespace, Path(sidecar.data_dir)
        )
        self.subscriber = Subscriber(
            self.pubsub, resources.subscriptions, self.resiliencies, self.metrics, self.spans
        )
        self._resilience: dict[str, AppResilience | None] = {}
        self.api_token = environ.get(sidecar.api_token_env) or None
        self.app_token = environ.get(sidecar.app_token_env) or None
        self.extended: dict[str, str] = {"daprRuntimeVersion": VERSION}
        self.outbound_ready = trio.Event()
        self.app_ready = trio.Event()
        self.shutdown: trio.Event | None = None  # set by the server: POST /v1.0/shutdown
        self.internal_address: tuple[str, int] | None = None
        # Work that outlives one request (streaming subscriptions) runs here while serving.
        self.background: trio.Nursery | None = None

    def resilience_for(self, target: str) -> AppResilience | None:
        """The Resiliency policy for invoking `target`; None: Dapr's built-in retries only."""
        if target not in self._resilience:
            policy = resolve_app_policy(self.resiliencies, target)
            custom = not policy.builtin or policy.timeout or policy.circuit_breaker
            self._resilience[target] = AppResilience(target, policy) if custom else None
        return self._resilience[target]

    @property
    def ready(self) -> bool:
        return self.outbound_ready.is_set() and (self.app is None or self.app_ready.is_set())

    def request_shutdown(self) -> None:
        if self.shutdown is not None:
            self.shutdown.set()

    async def run(
        self,
        bound: Mapping[str, tuple[str, int]],
        shutdown: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish our internal port, keep the registration and certificate fresh, and watch
        for the app; outbound-ready comes first, as daprd does, so apps can call out while
        they start (SDK clients wait on /v1.0/healthz/outbound)."""
        self.shutdown = shutdown
        internal = bound.get(self.config.internal_listener)
        try:
            async with trio.open_nursery() as nursery:
                self.background = nursery
                # State management (S3): every store ready (or start-up stops) before serving.
                await self.state.start()
                if self.role.leader:
                    self.state.schedule_cleanup(nursery)
                await self.pubsub.start()  # pub/sub (S4)
                await nursery.start(self.resolver.run)
                if self.role.certificate is None:  # else the supervisor renews it
                    await nursery.start(self.identity.run_rotation)
                if internal is not None:
                    self.internal_address = internal
                    if self.role.registers:
                        await self.register(internal[1])
                self.outbound_ready.set()
                nursery.start_soon(self._serve_app, nursery)
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.resolver.aclose()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.state.aclose()  # state management (S3)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.pubsub.aclose()  # pub/sub (S4)

    async def register(self, internal_port: int) -> None:
        """Publish this sidecar's internal (mutual-TLS) port in name resolution."""
        await self.resolver.register(
            Instance(self.app_id, self.namespace, self.config.advertise_host, internal_port)
        )

    async def _serve_app(self, nursery: trio.Nursery) -> None:
        """Once the app listens: its subscriptions (pub/sub, S4), in the leader only."""
        await self._wait_for_app()
        if self.app is None or self.config.app is None or not self.role.leader:
            return
        send, token, slots = self.app.send, self.app_token, self.app_slots
        authority = self.app.hosts[0].address.encode()
        channel: HttpAppChannel | GrpcAppChannel
        if self.config.app.protocol == "grpc":
            from filters.pubsub.grpc_app import GrpcAppChannel, discover_grpc  # protobuf: gRPC apps

            channel = GrpcAppChannel(send, authority, token, slots)
            find = partial(discover_grpc, send, authority, token)
        else:
            channel = HttpAppChannel(send, authority, token, slots)
            find = partial(discover_http, send, authority, self.app_id)

        async def discover() -> list[TopicSubscription]:
            # --app-max-concurrency covers every call to the app, this one too.
            async with slots if slots is not None else contextlib.nullcontext():
                return await find()

        await nursery.start(self.subscriber.run, channel, discover)

    async def _wait_for_app(self) -> None:
        """Ready once the app accepts TCP connections on its port (daprd's start-up check)."""
        if self.app is None:
            return
        host = self.app.hosts[0]
        logged = False
        while True:
            try:
                stream = await trio.open_tcp_stream(host.host, host.port)
            except OSError:
                if not logged:
                    log.info("waiting for the app on %s", host.address)
                    logged = True
                await trio.sleep(APP_PROBE_INTERVAL)
                continue
            await stream.aclose()
            break
        log.info("app %s is listening on %s", self.app_id, host.address)
        self.app_ready.set()
