"""One worker process: builds the App from its supervisor's spec, serves its share, drains."""

from __future__ import annotations

import logging
import signal
import sys

import trio

from exporters import process_log
from proxy import app as app_module
from proxy.cli import EXIT_CONFIG, SIDECAR_SWITCH_INTERVAL
from proxy.server import Bound, Sockets, serve
from proxy.start_errors import StartError, leaves, start_failure_lines, start_reason
from proxy.tls.errors import CaError
from proxy.workers.protocol import (
    Drain,
    Failed,
    Listen,
    Quit,
    Reader,
    Ready,
    Renewed,
    WorkerSpec,
    read_blocking,
    write_blocking,
)

SUPERVISOR_FD = 0  # the worker's stdin: the supervisor's messages, its end at the supervisor's

log = logging.getLogger("meshwire.worker")


def run(status_fd: int) -> int:
    """Serve as the supervisor's spec says; the exit code (0 after a drain, 2 when start-up
    failed, which the supervisor is told in lines it prints once for all workers)."""
    try:
        spec = read_blocking(SUPERVISOR_FD)
        if not isinstance(spec, WorkerSpec):
            return 0  # the supervisor went away before it said what to serve
        process_log.configure(spec.log_level, spec.log_as_json, spec.app_id, worker=spec.index)
        try:
            application = app_module.build(spec.config, sidecar_role=spec.sidecar_role)
        except (OSError, ValueError, CaError) as exc:
            write_blocking(status_fd, Failed([f"{spec.source}: {exc}"]))
            return EXIT_CONFIG
        if spec.config.sidecar is not None:
            sys.setswitchinterval(SIDECAR_SWITCH_INTERVAL)  # why: see where proxy/cli.py sets it
        try:
            return trio.run(_serve, application, spec, status_fd)
        except BaseExceptionGroup as group:
            lines = start_failure_lines(group, spec.origins)
            if lines is None:
                raise
            write_blocking(status_fd, Failed(lines))
            return EXIT_CONFIG
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group, before trio ran
        return 130


class _Stop:
    """Why this worker stops: its supervisor or a signal told it, or else the app did."""

    def __init__(self) -> None:
        self.told = False


async def _serve(application: app_module.App, spec: WorkerSpec, status_fd: int) -> int:
    shutdown = trio.Event()
    stop = _Stop()
    listen = trio.Event()  # set when the supervisor says every worker is ready
    binding = Sockets(reuse_port=True, admin_path=spec.admin_path, listen_gate=listen)
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if shutdown.is_set():
                        log.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s: draining", signal.Signals(signum).name)
                    stop.told = True
                    shutdown.set()

        async def run_server(
            task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            await serve(application, shutdown, binding=binding, task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: stop watching signals and the supervisor

        nursery.start_soon(watch_signals)
        nursery.start_soon(_follow_supervisor, application, shutdown, listen, stop)
        try:
            await nursery.start(run_server)
        except* OSError as group:  # a file or directory start-up needed (an access log, …)
            raise StartError([start_reason(exc) for exc in leaves(group)]) from group
        write_blocking(status_fd, Ready())
        await shutdown.wait()
        if not stop.told:  # the app asked (/v1.0/shutdown): the whole sidecar stops
            write_blocking(status_fd, Quit())
    return 0


async def _follow_supervisor(
    application: app_module.App, shutdown: trio.Event, listen: trio.Event, stop: _Stop
) -> None:
    """Listen when the supervisor says so; drain when it says so or is gone (the end of its
    pipe); install the certificates it renews."""
    reader = Reader(trio.lowlevel.FdStream(SUPERVISOR_FD))
    while True:
        message = await reader.next()
        if message is None:
            if not shutdown.is_set():
                log.warning("the supervisor is gone: draining")
            stop.told = True
            shutdown.set()
            return
        if isinstance(message, Listen):
            listen.set()
        elif isinstance(message, Drain):
            stop.told = True
            shutdown.set()
        elif isinstance(message, Renewed) and application.sidecar is not None:
            application.sidecar.identity.install(message.certificate)
