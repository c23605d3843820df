"""How many workers, what one config cannot share between them, and each worker's own config."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from config import schema
from config.dapr.errors import DaprResourceError
from config.dapr.resources import load_resources
from config.walk import Problem

# Components whose data lives inside one process: N workers would be N separate stores (a
# value saved through one worker missing from the next), N brokers (an event published to one
# worker never reaching the subscriber in another).
PER_PROCESS_COMPONENTS = {
    "state.in-memory": "a shared state store (state.redis, state.sqlite, state.postgresql)",
    "pubsub.in-memory": "a shared broker (pubsub.redis, pubsub.sqlite, pubsub.jetstream, …)",
}


def worker_count(concurrency: int | str) -> int:
    """`concurrency` as a number of processes: 0 and "auto" are one per CPU this process may
    run on (its affinity mask: a container's cpuset, taskset), at least 1."""
    if isinstance(concurrency, int) and concurrency > 0:
        return concurrency
    return max(1, len(os.sched_getaffinity(0)))


def refusals(config: schema.Config, *, flags: bool) -> list[Problem]:
    """What a sidecar cannot spread over `config.concurrency` workers; `flags` says the sidecar
    was set up by `--app-id` flags (what the problems then name) rather than a config file."""
    workers = worker_count(config.concurrency)
    sidecar = config.sidecar
    if workers == 1 or sidecar is None:
        return []
    problems: list[Problem] = []
    app = sidecar.app
    if app is not None and 0 < app.max_concurrency < workers:
        where = "--app-max-concurrency" if flags else "$.sidecar.app.max_concurrency"
        problems.append(
            Problem(
                where,
                f"{app.max_concurrency} call(s) to the app at a time cannot be split over"
                f" {workers} workers (each needs at least one): allow {workers} or more,"
                f" or run at most {app.max_concurrency} worker(s)",
            )
        )
    try:
        resources = load_resources(
            [Path(p) for p in sidecar.resources_paths], sidecar.app_id, sidecar.namespace
        )
    except DaprResourceError:
        return problems  # reported by the resource checks, which run first
    for component in resources.components:
        instead = PER_PROCESS_COMPONENTS.get(component.type)
        if instead is not None:
            problems.append(
                Problem(
                    "$.spec.type",
                    f"{component.name} is {component.type}, whose data lives in one process:"
                    f" with concurrency {workers} each worker would have its own; use {instead},"
                    " or --concurrency 1",
                    resources.component_files.get(component.name),
                )
            )
    return problems


def worker_config(
    config: schema.Config, addresses: dict[str, str], index: int, workers: int
) -> schema.Config:
    """Worker `index`'s config: each listener on the address its supervisor reserved (a port 0
    resolved, so every worker joins the same port), no admin listener (the supervisor's sums
    them all), and its share of the app's call limit (the shares add up to the limit)."""
    listeners = [
        msgspec.structs.replace(listener, address=addresses[listener.name])
        for listener in config.listeners
    ]
    sidecar = config.sidecar
    if sidecar is not None and sidecar.app is not None and sidecar.app.max_concurrency > 0:
        limit = sidecar.app.max_concurrency
        share = limit // workers + (1 if index < limit % workers else 0)
        app = msgspec.structs.replace(sidecar.app, max_concurrency=share)
        sidecar = msgspec.structs.replace(sidecar, app=app)
    return msgspec.structs.replace(
        config, listeners=listeners, admin=None, concurrency=1, sidecar=sidecar
    )
