"""pubsub.redis in the conformance suites: the shared Redis, and private ones to restart."""

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

ADDRESS = ("127.0.0.1", 6379)

# Short timings so redelivery (failed handler, dead consumer) shows within the suites' deadline.
TIMINGS = {"processingTimeout": "2s", "redeliverInterval": "200ms"}


class PrivateRedis:
    """A redis-server of the test's own; every acknowledged write is fsynced to its AOF, so a
    kill loses nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.metadata = {"redisHost": f"127.0.0.1:{self.port}"}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.directory),
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
        }
        command = ["redis-server"] + [a for k, v in options.items() for a in (f"--{k}", v)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self._process)

    def stop(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF already holds survives."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    directory = tmp_path / "private-redis"
    directory.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
