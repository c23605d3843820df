"""pubsub.jetstream in the conformance suites: the shared NATS, or a private nats-server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.pubsub.brokers import (
    BrokerFactory,
    free_port,
    require_service,
    stop_process,
    wait_for_port,
)

SHARED_URL = "nats://127.0.0.1:4222"
ACK_WAIT = "2s"  # short, so a message a dead subscriber held comes back quickly
PRIVATE_MAX_PAYLOAD = "8MB"  # the shared server keeps NATS's 1 MB default


class PrivateNats:
    """A nats-server with JetStream on a free port; its store survives `restart`."""

    def __init__(self, tmp_path: Path) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.store = tmp_path / "nats-store"
        self.config = tmp_path / "nats.conf"
        self.log = tmp_path / "nats.log"
        self.config.write_text(f"max_payload: {PRIVATE_MAX_PAYLOAD}\n")
        self.metadata = {"natsURL": f"nats://127.0.0.1:{self.port}", "ackWait": ACK_WAIT}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            *("nats-server", "-c", str(self.config), "-js"),
            *("-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)),
            *("-l", str(self.log)),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed")
    server = PrivateNats(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


FACTORY = BrokerFactory(
    name="jetstream",
    type="pubsub.jetstream",
    metadata=lambda tmp_path: {"natsURL": SHARED_URL, "ackWait": ACK_WAIT},
    require=lambda: require_service("NATS", ("127.0.0.1", 4222)),
    durable=True,
    shared=True,
    ordered=True,
    private=private_nats,
    max_payload=1024 * 1024,
    extra={
        "redelivery": f"a dead subscriber's messages return after ackWait ({ACK_WAIT})",
        "max_payload": "the shared server allows 1 MB per message (NATS default)",
    },
)
