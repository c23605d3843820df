"""pubsub.jetstream in the conformance suites: the shared NATS, or a private nats-server."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from tests.pubsub.brokers import (
    BrokerFactory,
    ServerProcess,
    free_port,
    require_service,
    running,
)

SHARED_URL = "nats://127.0.0.1:4222"
ACK_WAIT = "2s"  # short, so a message a dead subscriber held comes back quickly
PRIVATE_MAX_PAYLOAD = "8MB"  # the shared server keeps NATS's 1 MB default


def private_nats(tmp_path: Path) -> AbstractContextManager[ServerProcess]:
    """A nats-server with JetStream on a free port; its store survives a restart."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(f"max_payload: {PRIVATE_MAX_PAYLOAD}\n")
    command = [
        *("nats-server", "-c", str(config), "-js"),
        *("-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "nats-store")),
        *("-l", str(tmp_path / "nats.log")),
    ]
    metadata = {"natsURL": f"nats://127.0.0.1:{port}", "ackWait": ACK_WAIT}
    return running(ServerProcess(command, port, metadata))


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
