"""Dapr-style `meshwire run --app-id …` flags, and the ordinary config they generate."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from config import schema
from config.dapr.app_configuration import read_configuration
from config.dapr.configuration import with_dapr_tracing
from config.dapr.errors import DaprResourceError, ResourceProblem
from config.dapr.resources import load_resources
from config.loader import ConfigError, Problem
from config.sidecar import (
    AppChannel,
    DaprApiFilter,
    DaprGrpcFilter,
    DaprInternalFilter,
    Mtls,
    NameResolution,
    Sidecar,
)

DAPR_HTTP_PORT = 3500
DAPR_GRPC_PORT = 50001
INTERNAL_LISTENER = "dapr-internal"
# The Dapr API listeners serve one local app, whose every connection comes from one address:
# a per-client cap there would only cap the app (max_connections still bounds the listener).
APP_LIMITS = schema.Limits(max_connections_per_client=schema.Limits().max_connections)
# The flag that sets each generated listener's port ("admin": the admin port), for messages.
LISTENER_FLAGS = {
    "dapr-http": "--dapr-http-port",
    "dapr-grpc": "--dapr-grpc-port",
    INTERNAL_LISTENER: "--dapr-internal-grpc-port",
    "admin": "--metrics-port",
}

log = logging.getLogger("meshwire")


def add_dapr_arguments(run: argparse.ArgumentParser) -> None:
    dapr = run.add_argument_group(
        "Dapr sidecar mode (with --app-id; then -c/--config names a Dapr Configuration file)"
    )
    dapr.add_argument("--app-id", help="the app this process is the sidecar of")
    dapr.add_argument("--app-port", type=int, help="where the app listens (none: no app channel)")
    dapr.add_argument(
        "--app-protocol", choices=["http", "h2c", "grpc"], default="http", help="default http"
    )
    dapr.add_argument("--app-channel-address", default="127.0.0.1", help="default 127.0.0.1")
    dapr.add_argument("--app-max-concurrency", type=int, default=-1, help="default -1 (unlimited)")
    dapr.add_argument("--dapr-http-port", type=int, default=DAPR_HTTP_PORT, help="default 3500")
    dapr.add_argument("--dapr-grpc-port", type=int, default=DAPR_GRPC_PORT, help="default 50001")
    dapr.add_argument(
        "--dapr-internal-grpc-port",
        type=int,
        default=0,
        help="the port other sidecars call (default: a free port, published by name resolution)",
    )
    dapr.add_argument(
        "--dapr-listen-addresses", default="127.0.0.1", help="API listen address, default 127.0.0.1"
    )
    dapr.add_argument(
        "--metrics-port",
        type=int,
        help="admin and Prometheus port (default: a free port; its number is logged)",
    )
    dapr.add_argument(
        "--resources-path",
        action="append",
        default=[],
        metavar="DIR",
        help="directory of Dapr resource YAMLs (repeatable); --components-path is an alias",
    )
    dapr.add_argument("--components-path", action="append", default=[], help=argparse.SUPPRESS)
    dapr.add_argument(
        "--data-dir",
        help="CA, name resolution and embedded stores ($MESHWIRE_DATA_DIR, else ~/.meshwire)",
    )
    dapr.add_argument(
        "--trust-domain", default="public", help="SPIFFE trust domain of the sidecars (public)"
    )
    dapr.add_argument(
        "--sentry-address",
        metavar="https://HOST:PORT",
        help="get the workload certificate from `meshwire ca serve` there (verified against "
        "$DAPR_TRUST_ANCHORS; token from $MESHWIRE_CA_TOKEN or $DAPR_SENTRY_TOKEN_FILE)",
    )


def data_dir(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    return default_data_dir(environ)


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """$MESHWIRE_DATA_DIR, else ~/.meshwire: where sidecars and `ca init` keep the CA."""
    if environ.get("MESHWIRE_DATA_DIR"):
        return Path(environ["MESHWIRE_DATA_DIR"])
    return Path.home() / ".meshwire"


def sidecar_config(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> schema.Config:
    """The generated config: the app API listener, the mutual-TLS listener other sidecars call,
    the app cluster and the `sidecar` section. `--dump-config` prints it for growing by hand."""
    base = data_dir(args, environ)
    host = args.dapr_listen_addresses
    listeners = [
        schema.Listener(
            name="dapr-http",
            address=_address(host, args.dapr_http_port),
            filters=[DaprApiFilter()],
            use_remote_address=False,  # daprd adds no x-forwarded-* for the app's own calls
            limits=APP_LIMITS,
        ),
        schema.Listener(
            name=INTERNAL_LISTENER,
            address=_address(host, args.dapr_internal_grpc_port),
            protocols=["h2c"],
            sidecar_mtls=True,
            filters=[DaprInternalFilter()],
            generate_request_id=False,
            use_remote_address=False,  # the calling sidecar stamps Dapr's forwarded headers
        ),
        schema.Listener(
            name="dapr-grpc",
            address=_address(host, args.dapr_grpc_port),
            protocols=["h2c"],
            filters=[DaprGrpcFilter()],
            generate_request_id=False,  # proxied gRPC calls travel with the caller's metadata only
            use_remote_address=False,
            limits=APP_LIMITS,
        ),
    ]
    clusters: list[schema.Cluster] = []
    app: AppChannel | None = None
    if args.app_port:
        clusters.append(
            schema.Cluster(
                name="app",
                endpoints=[_address(args.app_channel_address, args.app_port)],
                protocol="http1" if args.app_protocol == "http" else "h2c",
            )
        )
        app = AppChannel(
            cluster="app", protocol=args.app_protocol, max_concurrency=args.app_max_concurrency
        )
    metrics = args.metrics_port if args.metrics_port is not None else 0
    sidecar = Sidecar(
        app_id=args.app_id,
        namespace=environ.get("NAMESPACE", "default"),
        app=app,
        internal_listener=INTERNAL_LISTENER,
        advertise_host=environ.get("DAPR_HOST_IP", "127.0.0.1"),
        data_dir=str(base),
        name_resolution=NameResolution(),
        mtls=Mtls(
            ca_dir=str(base / "ca"),
            trust_domain=args.trust_domain,
            sentry_address=args.sentry_address,
        ),
        resources_paths=[*args.resources_path, *args.components_path],
        config_file=args.config,
    )
    return schema.Config(
        admin=None if args.no_admin else schema.Admin(address=_address("127.0.0.1", metrics)),
        listeners=listeners,
        clusters=clusters,
        telemetry=schema.Telemetry(service_name=args.app_id),
        sidecar=sidecar,
        drain_timeout=schema.Duration(5.0),  # --dapr-graceful-shutdown-seconds default
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def with_sidecar_settings(config: schema.Config, dapr_config: str) -> schema.Config:
    """Apply a Dapr Configuration, read once: its tracing (exporters, and a tracing filter on
    every listener), nameResolution, mtls and trust domain; its accessControl is read by the
    runtime from `config_file`."""
    sidecar = config.sidecar
    assert sidecar is not None
    try:
        dapr, warnings = read_configuration(
            Path(dapr_config), sidecar.app_id, namespace=sidecar.namespace
        )
    except DaprResourceError as err:
        raise refused(err) from err
    log_warnings(warnings)
    tracing = dapr.tracing
    if tracing is not None and tracing.telemetry != schema.Telemetry(service_name=sidecar.app_id):
        config = with_dapr_tracing(config, tracing)
    changes: dict[str, object] = {"config_file": dapr_config}
    if dapr.name_resolution is not None:
        changes["name_resolution"] = NameResolution(
            component=dapr.name_resolution.component,  # type: ignore[arg-type]
            configuration=dict(dapr.name_resolution.configuration),
        )
    mtls = msgspec.structs.replace(
        sidecar.mtls,
        workload_cert_ttl=schema.Duration(dapr.mtls.workload_cert_ttl),
        allowed_clock_skew=schema.Duration(dapr.mtls.allowed_clock_skew),
    )
    if dapr.access_control is not None:  # the app's trust domain comes from accessControl
        mtls = msgspec.structs.replace(mtls, trust_domain=dapr.access_control.trust_domain)
    changes["mtls"] = mtls
    return msgspec.structs.replace(config, sidecar=msgspec.structs.replace(sidecar, **changes))


def refused(err: DaprResourceError) -> ConfigError:
    """Resources start-up cannot use: their warnings logged, their problems as a ConfigError
    that names each one's file."""
    log_warnings(err.warnings)
    return ConfigError([Problem(p.path, p.message, p.source) for p in err.problems])


def log_warnings(warnings: Iterable[ResourceProblem]) -> None:
    """Log what daprd would ignore (unknown fields), once each: these loads are the start-up
    checks; the runtime's later loads of the same files keep quiet."""
    for warning in dict.fromkeys(warnings):
        log.warning("%s", warning)


def check_resources(config: schema.Config) -> None:
    """Every resource file under --resources-path parses (problems listed with their paths);
    unknown fields are logged as warnings."""
    sidecar = config.sidecar
    if sidecar is None or not sidecar.resources_paths:
        return
    try:
        resources = load_resources(
            [Path(p) for p in sidecar.resources_paths], sidecar.app_id, sidecar.namespace
        )
    except DaprResourceError as err:
        raise refused(err) from err
    log_warnings(resources.warnings)
