"""`run --concurrency N`: reserve the ports, start N workers, own the admin port, the app and
the sidecar's identity and registration; drain every worker on SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from config import schema
from proxy.app import App
from proxy.bind import Reservation, reserve
from proxy.server import Bound, serve
from proxy.sidecar.child import app_environment, run_app
from proxy.sidecar.role import SidecarRole
from proxy.sidecar.runtime import SidecarRuntime
from proxy.tls.workload_cert import WorkloadCert
from proxy.workers.admin import SupervisorAdmin
from proxy.workers.group import WorkerGroup
from proxy.workers.plan import worker_config
from proxy.workers.protocol import WorkerSpec

log = logging.getLogger("meshwire")


@dataclass(frozen=True)
class Supervision:
    """What the CLI hands the supervisor: the checked config as an App (built here, never
    served: it validates the config once and holds the sidecar's identity), how many workers,
    and what the workers log and report their start-up failures as."""

    app: App
    workers: int
    args: argparse.Namespace
    command: Sequence[str]  # `-- CMD ARGS`: the app to start (a sidecar's)
    source: str  # the config file, or "command line"
    origins: dict[str, str]  # where each listener's address was set


@dataclass
class _Outcome:
    app_exit: int | None = None  # the app's exit status, when it ended on its own


async def supervise(run: Supervision) -> int:
    """Serve with N workers until a signal (or the app's exit); the exit code: the app's when
    it ended on its own, else 0 when every worker drained and exited 0, else 1."""
    shutdown = trio.Event()
    outcome = _Outcome()
    reservations: dict[str, Reservation] = {}
    with tempfile.TemporaryDirectory(prefix="meshwire-workers-") as directory:
        try:
            async with trio.open_nursery() as nursery:
                addresses = await _reserve(run.app, reservations)
                group = _group(run, addresses, Path(directory), shutdown)
                nursery.start_soon(_watch_signals, shutdown, group)

                async def run_group(task_status: trio.TaskStatus[None]) -> None:
                    await group.run(task_status=task_status)
                    nursery.cancel_scope.cancel()  # every worker is gone: so is everything else

                await nursery.start(run_group)
                if not shutdown.is_set():  # else a signal came while they started: they stop
                    await _front(nursery, run, group, addresses, outcome)
        finally:
            for reservation in reservations.values():
                reservation.close()
    log.info("stopped")
    return outcome.app_exit if outcome.app_exit is not None else group.exit_code


def _group(
    run: Supervision, addresses: dict[str, tuple[str, int]], directory: Path, shutdown: trio.Event
) -> WorkerGroup:
    admin_paths = [str(directory / f"w{i}.sock") for i in range(run.workers)]
    sidecar = run.app.sidecar
    return WorkerGroup(
        partial(_spec, run, _worker_addresses(addresses), admin_paths),
        admin_paths,
        shutdown,
        float(run.app.config.drain_timeout),
        sidecar.identity.current if sidecar is not None else None,
    )


async def _front(
    nursery: trio.Nursery,
    run: Supervision,
    group: WorkerGroup,
    addresses: dict[str, tuple[str, int]],
    outcome: _Outcome,
) -> None:
    """With every worker serving: the admin port, the sidecar's duties, the app."""
    shutdown = group.shutdown
    admin_app = dataclasses.replace(run.app, listeners=[], sidecar=None)
    admin = partial(SupervisorAdmin, group=group, listeners=addresses)
    bound: Bound = await nursery.start(partial(serve, admin_app, shutdown, admin_handler=admin))
    addresses = {**addresses, **bound.addresses}
    for name, (host, port) in addresses.items():
        log.info("listening: %s on %s:%d", name, host, port)
    log.info("serving with %d workers", run.workers)
    sidecar = run.app.sidecar
    if sidecar is not None:
        internal = addresses.get(sidecar.config.internal_listener)
        await nursery.start(_sidecar_duties, sidecar, internal[1] if internal else None, group)
    if run.command:

        async def run_child() -> None:
            env = _app_env(run.args, addresses)
            outcome.app_exit = await run_app(run.command, env, shutdown)

        nursery.start_soon(run_child)


async def _reserve(app: App, reservations: dict[str, Reservation]) -> dict[str, tuple[str, int]]:
    """Hold every listener's port for the workers; BindError as the single process says it."""
    addresses: dict[str, tuple[str, int]] = {}
    for spec in app.listeners:
        name = spec.config.name
        reservations[name] = await reserve(name, spec.config.address, spec.host, spec.port)
        addresses[name] = (spec.host, reservations[name].port)
    return addresses


def _worker_addresses(addresses: dict[str, tuple[str, int]]) -> dict[str, str]:
    """Listener → "host:port" as a config says it, with the port reserved (never 0)."""
    return {
        name: f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for name, (host, port) in addresses.items()
    }


def _spec(
    run: Supervision,
    addresses: dict[str, str],
    admin_paths: list[str],
    index: int,
    certificate: WorkloadCert | None,
) -> WorkerSpec:
    config: schema.Config = run.app.config
    role = None
    if config.sidecar is not None:
        role = SidecarRole(certificate=certificate, registers=False, leader=index == 0)
    return WorkerSpec(
        index=index,
        config=worker_config(config, addresses, index, run.workers),
        admin_path=admin_paths[index],
        sidecar_role=role,
        log_level=run.args.log_level,
        log_as_json=run.args.log_as_json,
        app_id=run.args.app_id,
        source=run.source,
        origins=run.origins,
    )


async def _watch_signals(shutdown: trio.Event, group: WorkerGroup) -> None:
    """The first SIGTERM/SIGINT drains every worker (over its pipe, so a signal that reached
    the whole process group, as Ctrl-C does, counts once); a second stops them now."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if shutdown.is_set():
                log.warning("second signal: stopping the workers now")
                group.signal_all(signal.SIGTERM)
                continue
            log.info("%s: draining %d workers", signal.Signals(signum).name, len(group.slots))
            shutdown.set()


async def _sidecar_duties(
    runtime: SidecarRuntime,
    internal_port: int | None,
    group: WorkerGroup,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """What the sidecar does once for all its workers: renew the workload certificate (each
    renewal goes to every worker) and publish the internal port in name resolution."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.resolver.run)
            await nursery.start(partial(runtime.identity.run_rotation, on_rotated=group.renewed))
            if internal_port is not None:
                await runtime.register(internal_port)
            task_status.started()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await runtime.resolver.aclose()


def _app_env(args: argparse.Namespace, addresses: dict[str, tuple[str, int]]) -> dict[str, str]:
    return app_environment(
        args.app_id,
        addresses["dapr-http"][1],
        addresses["dapr-grpc"][1] if "dapr-grpc" in addresses else args.dapr_grpc_port,
        args.app_port,
        addresses["admin"][1] if "admin" in addresses else None,
    )
