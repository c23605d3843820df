"""The meshwire command line: run (a config file, quick mode or a sidecar), validate, ca."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from config.loader import ConfigError, format_problems
from exporters import process_log
from exporters.telemetry import Telemetry
from proxy import app as app_module
from proxy.run_config import (
    UnreadableFile,
    concurrency_argument,
    dump_config,
    listener_origins,
    load_run_config,
)
from proxy.server import Bound, serve
from proxy.sidecar.ca_command import add_ca_command, run_ca_command
from proxy.sidecar.child import app_environment, run_app
from proxy.sidecar.options import add_dapr_arguments
from proxy.start_errors import StartError, leaves, start_failure_lines, start_reason
from proxy.tls.errors import CaError
from proxy.validate import add_validate_command, validate
from proxy.version import VERSION
from proxy.workers.plan import worker_count
from proxy.workers.supervisor import Supervision, supervise

EXIT_CONFIG = 2
SIDECAR_SWITCH_INTERVAL = 0.0005  # seconds; see where it is set

log = logging.getLogger("meshwire")


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
        "--concurrency",
        metavar="N",
        type=concurrency_argument,
        help="worker processes (default 1: one process, as without the flag; 0 or auto: one per"
        " CPU). With N > 1 a supervisor starts N workers that share every listener's port"
        " (SO_REUSEPORT), owns the admin port (stats summed over the workers), restarts a worker"
        " that dies and drains them all on SIGTERM. A sidecar keeps one certificate and one"
        " name-resolution entry (the supervisor's); worker 0 alone consumes subscriptions;"
        " in-memory components are refused. Overrides `concurrency:` in the config file",
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
        "--codec",
        choices=["auto", "h11", "httptools"],
        help="HTTP/1.1 parser for listeners and upstreams (config key `codec`; default auto:"
        " httptools when installed, else h11)",
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
    add_validate_command(sub)
    return parser


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
            raise StartError([start_reason(exc) for exc in leaves(group)]) from group
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
    workers = worker_count(config.concurrency)
    try:
        # With workers this process serves none of the App: building it checks the config once,
        # before any worker starts, and gets the sidecar's one identity; it exports nothing.
        application = app_module.build(config, Telemetry.noop() if workers > 1 else None)
    except (OSError, ValueError, CaError) as exc:
        return _fail(args, [f"{source}: {exc}"])
    origins = listener_origins(args, config)
    try:
        if workers > 1:
            supervision = Supervision(application, workers, args, command, source, origins)
            return trio.run(supervise, supervision)
        if config.sidecar is not None:
            # Broker clients run on their own threads (paho, asyncio, worker threads); with the
            # default 5 ms switch interval each hand-off to them waits for the busy trio thread
            # to drop the GIL, which showed as tens of ms at the p99 of pub/sub deliveries.
            sys.setswitchinterval(SIDECAR_SWITCH_INTERVAL)
        # Everything built so far lives as long as the process: out of the collector's sight,
        # a full collection no longer walks it (a measured ~20% of a proxied request's CPU).
        gc.freeze()
        return trio.run(_run, application, command, args)
    except BaseExceptionGroup as group:
        lines = start_failure_lines(group, origins)
        if lines is None:
            raise
        return _fail(args, lines)
    except KeyboardInterrupt:
        return 130


def _validate(files: Sequence[str]) -> int:
    """`meshwire validate` (proxy/validate.py); `files` holds the --resources-path folders too."""
    return 0 if validate(files) else EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
