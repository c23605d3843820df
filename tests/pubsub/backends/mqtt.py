"""pubsub.mqtt3 in the conformance suites: the shared Mosquitto, and private ones to restart."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from tests.pubsub.brokers import (
    BrokerFactory,
    ServerProcess,
    free_port,
    require_service,
    running,
)

SHARED_URL = "tcp://127.0.0.1:1883"


def running_mosquitto(tmp_path: Path) -> AbstractContextManager[ServerProcess]:
    """`mosquitto -c <conf>` on a free port, its persistence file in its own directory;
    stopped with SIGTERM, so it saves its database."""
    port = free_port()
    directory = tmp_path / f"mosquitto-{port}"
    directory.mkdir(parents=True)
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {directory}/",
        "autosave_interval 1",  # with autosave_on_changes: save after every change
        "autosave_on_changes true",
        f"log_dest file {directory}/mosquitto.log",
    ]
    if os.geteuid() == 0:  # else it drops to the mosquitto user, who cannot write here
        lines.append("user root")
    config = directory / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    metadata = {"url": f"tcp://127.0.0.1:{port}"}
    return running(ServerProcess(["mosquitto", "-c", str(config)], port, metadata, graceful=True))


FACTORY = BrokerFactory(
    name="mqtt",
    type="pubsub.mqtt3",
    metadata=lambda tmp_path: {"url": SHARED_URL},
    require=lambda: require_service("Mosquitto", ("127.0.0.1", 1883)),
    durable=True,
    shared=True,
    ordered=True,
    private=running_mosquitto,
    extra={
        "redelivery": "unacked messages return only to the same client id (a resumed session)",
        "sessions": "persistent sessions stay on the broker after the tests",
    },
)
