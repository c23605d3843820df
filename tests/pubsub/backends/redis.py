"""pubsub.redis in the conformance suites: the shared Redis, and private ones to restart."""

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

ADDRESS = ("127.0.0.1", 6379)

# Short timings so redelivery (failed handler, dead consumer) shows within the suites' deadline.
TIMINGS = {"processingTimeout": "2s", "redeliverInterval": "200ms"}


def private_redis(tmp_path: Path) -> AbstractContextManager[ServerProcess]:
    """A redis-server of the test's own; every acknowledged write is fsynced to its AOF, so
    SIGKILL loses nothing (and no shutdown save happens)."""
    directory = tmp_path / "private-redis"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "dir": str(directory),
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
    }
    command = ["redis-server"] + [a for k, v in options.items() for a in (f"--{k}", v)]
    return running(ServerProcess(command, port, {"redisHost": f"127.0.0.1:{port}"}))


FACTORY = BrokerFactory(
    name="redis",
    type="pubsub.redis",
    metadata=lambda tmp_path: {"redisHost": "{}:{}".format(*ADDRESS), **TIMINGS},
    require=lambda: require_service("Redis", ADDRESS),
    durable=True,
    shared=True,
    ordered=True,
    private=private_redis,
    extra={"redelivery": "processingTimeout 2s, checked every 200ms"},
)
