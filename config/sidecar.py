"""Dapr mode's config: the app this process is the sidecar of, its identity, its terminals."""

from __future__ import annotations

from typing import Literal

import msgspec

from config.base import Duration, Frozen


class AppChannel(Frozen, frozen=True):
    """Where the sidecar reaches its app (Dapr's app channel)."""

    cluster: str = "app"  # the cluster (in `clusters`) that points at the app
    protocol: Literal["http", "h2c", "grpc"] = "http"
    max_concurrency: int = -1  # Dapr's --app-max-concurrency; -1 is unlimited


class NameResolution(Frozen, frozen=True):
    """Dapr's `spec.nameResolution`: how sidecars find each other."""

    component: Literal["sqlite", "mdns", "static", "dns"] = "sqlite"
    configuration: dict[str, object] = msgspec.field(default_factory=dict)


class Mtls(Frozen, frozen=True):
    """The embedded CA and this sidecar's workload certificate."""

    ca_dir: str = ".meshwire/ca"  # ca.crt, issuer.crt, issuer.key (created on first start)
    trust_domain: str = "public"
    workload_cert_ttl: Duration = Duration(24 * 3600.0)
    allowed_clock_skew: Duration = Duration(15 * 60.0)
    sentry_address: str | None = None  # https://host:port of `meshwire ca serve`; None: local CA


class Sidecar(Frozen, frozen=True):
    """This process is the Dapr sidecar of one app."""

    app_id: str
    namespace: str = "default"
    app: AppChannel | None = None  # None: no app channel (invocations to it fail)
    internal_listener: str = "dapr-internal"  # the listener other sidecars call
    advertise_host: str = "127.0.0.1"  # published through name resolution with its port
    data_dir: str = ".meshwire"
    name_resolution: NameResolution = msgspec.field(default_factory=NameResolution)
    mtls: Mtls = msgspec.field(default_factory=Mtls)
    resources_paths: list[str] = msgspec.field(default_factory=list)
    config_file: str | None = None  # a Dapr Configuration: accessControl is read from it
    # Names of environment variables (never the secrets themselves, so a dump is safe to share).
    api_token_env: str = "DAPR_API_TOKEN"
    app_token_env: str = "APP_API_TOKEN"


class DaprApiFilter(Frozen, frozen=True, tag="dapr_api"):
    """Terminal: Dapr's HTTP API for the app (health, metadata, shutdown, service invocation)."""

    max_body_size: int = 4 << 20  # Dapr's --max-body-size default, 4 MiB


class DaprInternalFilter(Frozen, frozen=True, tag="dapr_internal"):
    """Terminal: invocations arriving from other sidecars, checked and forwarded to the app."""


class DaprGrpcFilter(Frozen, frozen=True, tag="dapr_grpc"):
    """Terminal: Dapr's gRPC API for the app (`dapr.proto.runtime.v1.Dapr`) and gRPC proxying."""

    max_message_size: int = 4 << 20  # Dapr's --max-body-size default, 4 MiB
