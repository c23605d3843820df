"""The meshwire command line: run (config file or quick mode), validate, version."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import trio
import yaml

from config import schema
from config.dapr.app_configuration import read_configuration
from config.dapr.configuration import DaprConfigError, load_tracing, with_dapr_tracing
from config.dapr.errors import DaprResourceError
from config.loader import ConfigError, Problem, check_references, format_problems, load_file
from config.walk import child
from exporters import process_log
from filters.backends import ComponentInitError
from proxy import app as app_module
from proxy.reasons import os_reason
from proxy.server import BindError, Bound, serve
from proxy.sidecar.ca_command import add_ca_command, run_ca_command
from proxy.sidecar.child import AppStartError, app_environment, run_app
from proxy.sidecar.options import (
    LISTENER_FLAGS,
    add_dapr_arguments,
    check_resources,
    log_warnings,
    sidecar_config,
    with_sidecar_settings,
)
from proxy.tls.errors import CaError
from proxy.version import VERSION

EXIT_CONFIG = 2
SIDECAR_SWITCH_INTERVAL = 0.0005  # seconds; see where it is set

log = logging.getLogger("meshwire")


class StartError(Exception):
    """Start-up could not open something it needs (a file, a directory): one line each."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


class UnreadableFile(Exception):
    """A file named on the command line cannot be read: one line, `PATH: reason`."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


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


def _start_reason(exc: BaseException) -> str:
    if not isinstance(exc, OSError):
        return str(exc)
    return f"{exc.filename}: {os_reason(exc)}" if exc.filename else os_reason(exc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshwire",
        description="Observability-first service proxy (Envoy-style data plane).",
    )
    parser.add_argument("--version", action="version", version=f"meshwire {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the proxy",
        usage="%(prog)s -c FILE [options]\n"
        "       %(prog)s --listen HOST:PORT --upstream URL [options]\n"
        "       %(prog)s --app-id ID [options] [-- CMD ARGS...]",
        description="Run from a YAML config (-c), or in quick mode from --listen and --upstream,"
        " or as the Dapr sidecar of an app (--app-id).",
        epilog="-- CMD ARGS...: with --app-id, start the app as a child process with Dapr's"
        " environment (APP_ID, APP_PORT, DAPR_HTTP_PORT, DAPR_GRPC_PORT, DAPR_METRICS_PORT)."
        " When the app exits, meshwire drains and exits with the app's exit code (128+N if"
        " signal N killed it); when meshwire is stopped, it stops the app first.",
    )
    run.add_argument("-c", "--config", metavar="FILE", help="meshwire YAML config")
    run.add_argument("--listen", metavar="HOST:PORT", help="quick mode: listener address")
    run.add_argument(
        "--upstream",
        metavar="URL",
        action="append",
        help="quick mode: upstream http://host:port or h2c://host:port (repeat to balance)",
    )
    run.add_argument(
        "--admin", metavar="HOST:PORT", help="admin listener address (default 127.0.0.1:9901)"
    )
    run.add_argument("--no-admin", action="store_true", help="run without the admin listener")
    run.add_argument(
        "--access-log", metavar="PATH", help="quick mode: JSON access log ('-' = stdout)"
    )
    run.add_argument(
        "--dapr-config",
        metavar="FILE",
        help="a Dapr Configuration resource whose spec.tracing sets exporters and sampling",
    )
    run.add_argument(
        "--dump-config", action="store_true", help="print the effective config and exit"
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warn", "warning", "error"],
        help="process log level (default info)",
    )
    run.add_argument(
        "--log-as-json",
        action="store_true",
        help="process logs as one JSON object per line, in Dapr's schema",
    )

    add_dapr_arguments(run)

    add_ca_command(sub)

    from proxy.validate import add_validate_command

    add_validate_command(sub)
    return parser


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
        return config
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
    return config


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
    import msgspec

    return msgspec.structs.replace(config, **changes)


async def _run(
    app: app_module.App, command: Sequence[str] = (), args: argparse.Namespace | None = None
) -> int:
    """Serve until a signal, or until the app started by `-- CMD` ends; the exit code: the
    app's when it ended on its own, else 0."""
    shutdown = trio.Event()
    exit_code = 0
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if shutdown.is_set():
                        log.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s: draining", signal.Signals(signum).name)
                    shutdown.set()

        async def run_server(
            task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            await serve(app, shutdown, task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: stop watching for signals too

        nursery.start_soon(watch_signals)
        try:
            bound = await nursery.start(run_server)
        except* OSError as group:  # a file or directory start-up needed (an access log, …)
            raise StartError([_start_reason(exc) for exc in _leaves(group)]) from group
        for name, (host, port) in bound.addresses.items():
            log.info("listening: %s on %s:%d", name, host, port)
        if command and args is not None:
            addresses = bound.addresses
            env = app_environment(
                args.app_id,
                addresses["dapr-http"][1],
                addresses["dapr-grpc"][1] if "dapr-grpc" in addresses else args.dapr_grpc_port,
                args.app_port,
                addresses["admin"][1] if "admin" in addresses else None,
            )

            async def run_child() -> None:
                nonlocal exit_code
                status = await run_app(command, env, shutdown)
                if status is not None:
                    exit_code = status

            nursery.start_soon(run_child)
    log.info("stopped")
    return exit_code


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line (without a trailing `-- CMD`)."""
    return _parser().parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # `meshwire run --app-id x ... -- python app.py`: the app to start
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    if args.command == "run":
        process_log.configure(args.log_level, args.log_as_json, args.app_id)
        try:
            return _run_command(args, command)
        except Exception:
            if not args.log_as_json:
                raise
            log.critical("meshwire crashed", exc_info=True)  # even a traceback is one JSON line
            return 1
    if command:
        print("meshwire: `-- CMD` starts an app, which needs `run --app-id`", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate":
        return _validate(args.files)
    return run_ca_command(args)


def _fail(args: argparse.Namespace, lines: Sequence[str]) -> int:
    """Why `run` cannot start, one line each: plain on stderr, or with --log-as-json one fatal
    record each, like every other line the process writes."""
    for line in lines:
        if args.log_as_json:
            log.critical("%s", line)
        else:
            print(line, file=sys.stderr)
    return EXIT_CONFIG


def _run_command(args: argparse.Namespace, command: Sequence[str]) -> int:
    if command and not args.app_id:
        return _fail(args, ["meshwire: `-- CMD` starts an app, which needs --app-id"])
    source = args.config or "command line"
    try:
        config = load_run_config(args)
    except ConfigError as err:
        return _fail(args, format_problems(err.problems, source).splitlines())
    except UnreadableFile as err:
        return _fail(args, [str(err)])
    if args.dump_config:
        sys.stdout.write(dump_config(config))
        return 0
    try:
        application = app_module.build(config)
    except (OSError, ValueError, CaError) as exc:
        return _fail(args, [f"{source}: {exc}"])
    origins = listener_origins(args, config)
    try:
        if config.sidecar is not None:
            # Broker clients run on their own threads (paho, asyncio, worker threads); with the
            # default 5 ms switch interval each hand-off to them waits for the busy trio thread
            # to drop the GIL, which showed as tens of ms at the p99 of pub/sub deliveries.
            sys.setswitchinterval(SIDECAR_SWITCH_INTERVAL)
        return trio.run(_run, application, command, args)
    except BaseExceptionGroup as group:
        # What cannot start (a port, a state store, a broker) ends start-up with its reason.
        failed, rest = group.split((BindError, ComponentInitError, StartError, AppStartError))
        if failed is None or rest is not None:
            raise
        return _fail(args, [line for exc in _leaves(failed) for line in _explain(exc, origins)])
    except KeyboardInterrupt:
        return 130


def _explain(failure: BaseException, origins: dict[str, str]) -> list[str]:
    """The lines (one per reason) a start-up failure is shown as."""
    if isinstance(failure, BindError):
        return [f"{origins.get(failure.name, f'listener {failure.name}')}: {failure}"]
    if isinstance(failure, StartError):
        return [f"meshwire: cannot start: {reason}" for reason in failure.reasons]
    return [f"meshwire: {failure}"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _validate(files: Sequence[str]) -> int:
    """`meshwire validate` (proxy/validate.py); `files` holds the --resources-path folders too."""
    from proxy.validate import validate

    return 0 if validate(files) else EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
