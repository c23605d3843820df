"""pubsub.mqtt3 in the conformance suites: the shared Mosquitto, and private ones to restart."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.pubsub.brokers import (
    BrokerFactory,
    PrivateBroker,
    free_port,
    require_service,
    stop_process,
    wait_for_port,
)

SHARED_URL = "tcp://127.0.0.1:1883"


class PrivateMosquitto:
    """`mosquitto -c <conf>` on a free port, its persistence file in its own directory."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory / f"mosquitto-{self.port}"
        self.directory.mkdir(parents=True)
        self.config = self.directory / "mosquitto.conf"
        self.config.write_text(self._config())
        self.metadata = {"url": f"tcp://127.0.0.1:{self.port}"}
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.directory}/",
            "autosave_interval 1",  # with autosave_on_changes: save after every change
            "autosave_on_changes true",
            f"log_dest file {self.directory}/mosquitto.log",
        ]
        if os.geteuid() == 0:  # else it drops to the mosquitto user, who cannot write here
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self._process)

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, kill=False)  # SIGTERM: Mosquitto saves its database
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.skip("the mosquitto binary is not installed")
    server = PrivateMosquitto(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def private_mosquitto(tmp_path: Path) -> Iterator[PrivateBroker]:
    with running_mosquitto(tmp_path) as server:
        yield server


FACTORY = BrokerFactory(
    name="mqtt",
    type="pubsub.mqtt3",
    metadata=lambda tmp_path: {"url": SHARED_URL},
    require=lambda: require_service("Mosquitto", ("127.0.0.1", 1883)),
    durable=True,
    shared=True,
    ordered=True,
    private=private_mosquitto,
    extra={
        "redelivery": "unacked messages return only to the same client id (a resumed session)",
        "sessions": "persistent sessions stay on the broker after the tests",
    },
)
