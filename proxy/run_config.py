"""The config `meshwire run ARGS` stands for: a config file, quick mode or a sidecar, and
where each listener's address came from (what a start-up error names)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from config import schema
from config.dapr.app_configuration import read_configuration
from config.dapr.configuration import DaprConfigError, load_tracing, with_dapr_tracing
from config.dapr.errors import DaprResourceError
from config.loader import ConfigError, Problem, check_references, load_file
from config.walk import child
from proxy.reasons import os_reason
from proxy.sidecar.options import (
    LISTENER_FLAGS,
    check_resources,
    log_warnings,
    sidecar_config,
    with_sidecar_settings,
)
from proxy.workers.plan import refusals

log = logging.getLogger("meshwire")


class UnreadableFile(Exception):
    """A file named on the command line cannot be read: one line, `PATH: reason`."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


def concurrency_argument(text: str) -> int | Literal["auto"]:
    """`--concurrency N`: a number of worker processes, or 0/auto for one per CPU."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise UnreadableFile(path, "no such file") from None
    except IsADirectoryError:
        raise UnreadableFile(path, "a directory, not a file") from None
    except OSError as exc:
        raise UnreadableFile(path, os_reason(exc)) from None


def quick_config(
    listen: str, upstreams: Sequence[str], admin: str | None, access_log: str | None
) -> schema.Config:
    """The config that quick mode stands for: one listener, one catch-all route, one cluster."""
    endpoints: list[str] = []
    protocols: set[str] = set()
    for url in upstreams:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "h2c") or not parts.hostname or parts.port is None:
            raise ConfigError(
                [
                    Problem(
                        "--upstream", f"expected http://host:port or h2c://host:port, got {url!r}"
                    )
                ]
            )
        protocols.add("h2c" if parts.scheme == "h2c" else "http1")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        endpoints.append(f"{host}:{parts.port}")
    if len(protocols) > 1:
        raise ConfigError([Problem("--upstream", "all upstreams must use the same scheme")])
    protocol = protocols.pop()
    return schema.Config(
        admin=schema.Admin(address=admin) if admin else schema.Admin(),
        listeners=[
            schema.Listener(
                name="ingress",
                address=listen,
                routes=[
                    schema.Route(
                        name="default", match=schema.RouteMatch(prefix="/"), cluster="upstream"
                    )
                ],
                access_log=schema.AccessLog(path=access_log) if access_log else None,
            )
        ],
        clusters=[schema.Cluster(name="upstream", endpoints=endpoints, protocol=protocol)],  # type: ignore[arg-type]
    )


def _without_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def dump_config(config: schema.Config) -> str:
    return yaml.safe_dump(_without_nulls(schema.to_builtins(config)), sort_keys=False)


def load_run_config(args: argparse.Namespace) -> schema.Config:
    """The config `meshwire run ARGS` stands for; ConfigError lists every problem, and a file
    named on the command line that cannot be read is an UnreadableFile."""
    config = _load(args)
    if args.concurrency is not None:  # the flag wins over the file
        config = _replace(config, concurrency=args.concurrency)
    problems = refusals(config, flags=bool(args.app_id))
    if problems:
        raise ConfigError(problems)
    return config


def _load(args: argparse.Namespace) -> schema.Config:
    for path in (args.config, args.dapr_config):
        if path:
            _check_readable(path)
    if args.app_id:
        if args.listen or args.upstream:
            raise ConfigError([Problem("argv", "--app-id runs a sidecar: no --listen/--upstream")])
        config = sidecar_config(args)
        dapr_config = args.config or args.dapr_config
        if dapr_config:
            config = with_sidecar_settings(config, dapr_config)
        check_resources(config)
        problems = check_references(config)
        if problems:
            raise ConfigError(problems)
        return _with_codec(config, args)
    if args.config and (args.listen or args.upstream):
        raise ConfigError([Problem("argv", "use either -c FILE or --listen/--upstream, not both")])
    if args.config:
        config = load_file(args.config)
    elif args.listen and args.upstream:
        config = quick_config(args.listen, args.upstream, args.admin, args.access_log)
        problems = check_references(config)
        if problems:
            raise ConfigError(problems)
    else:
        raise ConfigError([Problem("argv", "give -c FILE, or both --listen and --upstream")])
    if args.dapr_config:
        config = _with_dapr_configuration(config, args.dapr_config)
    if args.no_admin:
        config = _replace(config, admin=None)
    elif args.admin and args.config:
        config = _replace(config, admin=schema.Admin(address=args.admin))
    return _with_codec(config, args)


def _with_codec(config: schema.Config, args: argparse.Namespace) -> schema.Config:
    """--codec overrides the config's `codec` key in every mode."""
    codec = getattr(args, "codec", None)
    return _replace(config, codec=codec) if codec else config


def listener_origins(args: argparse.Namespace, config: schema.Config) -> dict[str, str]:
    """Where each listener's address was set (listener name → a flag, or a path in the config
    file), and the admin port's under "admin": what a start-up error names besides the address."""
    if args.app_id:
        return dict(LISTENER_FLAGS)
    if args.config:
        origins = {
            listener.name: f"{args.config}: {child(child('$.listeners', i), 'address')}"
            for i, listener in enumerate(config.listeners)
        }
        origins["admin"] = "--admin" if args.admin else f"{args.config}: $.admin.address"
        return origins
    return {"ingress": "--listen", "admin": "--admin"}


def _with_dapr_configuration(config: schema.Config, path: str) -> schema.Config:
    try:
        _, warnings = read_configuration(path)
    except DaprResourceError as err:  # load_tracing reports the problems that matter here
        warnings = err.warnings
    log_warnings(warnings)  # unknown fields: ignored, as daprd does, but never silently
    try:
        tracing = load_tracing(path, config.telemetry.service_name)
    except DaprConfigError as err:
        raise ConfigError(err.problems) from err
    if tracing.ignored:
        ignored = ", spec.".join(tracing.ignored)
        log.warning("%s: not applied yet: spec.%s", path, ignored)
    if tracing.telemetry == schema.Telemetry(service_name=config.telemetry.service_name):
        return config  # no tracing section: no tracing filter either
    return with_dapr_tracing(config, tracing)


def _replace(config: schema.Config, **changes: object) -> schema.Config:
    return msgspec.structs.replace(config, **changes)
