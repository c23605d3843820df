"""pubsub.rabbitmq in the conformance suites: the shared node, or a private one to restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aio_pika

from tests.pubsub.brokers import (
    BrokerFactory,
    free_port,
    require_service,
    unavailable,
    wait_for_port,
)
from tests.pubsub.cleanup import RABBITMQ_VHOST, ensure_rabbitmq_vhost

SHARED_URL = f"amqp://guest:guest@127.0.0.1:5672/{RABBITMQ_VHOST}"
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the script itself: the sbin wrapper su's away
BOOT_DEADLINE = 90.0  # seconds; a node boots in about 7 s on this machine
BOOT_ATTEMPTS = 3


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own: its name, ports, cookie and Mnesia under `root`."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.node = f"mw{self.port}@localhost"
        self.root = root
        self.metadata = {
            "connectionString": f"amqp://guest:guest@127.0.0.1:{self.port}/",
            "reconnectWaitSeconds": "1",
        }
        self._env = self._environment(free_port())
        self._process: subprocess.Popen[bytes] | None = None

    def _environment(self, dist_port: int) -> dict[str, str]:
        for name in ("home", "mnesia", "log"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")  # not /etc's: it names the shared node
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),  # the node's own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> None:
        """Boot the node; a boot that dies early (its name still registered with epmd after a
        kill, say) is tried again."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            try:
                self._boot()
                return
            except RuntimeError:
                self.stop()
                if attempt == BOOT_ATTEMPTS:
                    raise
                time.sleep(1)

    def _boot(self) -> None:
        with (self.root / "server.out").open("ab") as out:
            self._process = subprocess.Popen(
                [SERVER],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: beam and its port helpers
            )
        wait_for_port(self.port, self._process, deadline=BOOT_DEADLINE)
        self._wait_for_login(self._process)

    def _wait_for_login(self, process: subprocess.Popen[bytes]) -> None:
        end = time.monotonic() + BOOT_DEADLINE
        while True:
            try:
                asyncio.run(_login(self.metadata["connectionString"]))
                return
            except Exception as exc:
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(
                        f"{self.node} does not accept AMQP logins: {self.tail()}"
                    ) from exc
                time.sleep(0.1)

    def tail(self) -> str:
        """The end of the node's console output, for a failure message."""
        path = self.root / "server.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-2000:]

    def stop(self) -> None:
        """SIGKILL to the node's process group: no clean shutdown, as a crash would be."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:  # else its pid (and group id) may belong to another
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


async def _login(url: str) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    await connection.close()


@contextmanager
def private_rabbitmq(tmp_path: Path) -> Iterator[PrivateRabbitMQ]:
    server = PrivateRabbitMQ(tmp_path / "rabbitmq")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def require_shared_rabbitmq() -> None:
    require_service("RabbitMQ", ("127.0.0.1", 5672))
    problem = ensure_rabbitmq_vhost()
    if problem is not None:
        unavailable(f"RabbitMQ's test vhost {RABBITMQ_VHOST!r}: {problem}")


FACTORY = BrokerFactory(
    name="rabbitmq",
    type="pubsub.rabbitmq",
    metadata=lambda tmp_path: {"connectionString": SHARED_URL, "reconnectWaitSeconds": "1"},
    require=require_shared_rabbitmq,
    durable=True,
    shared=True,
    ordered=True,
    native_ttl=True,
    private=private_rabbitmq,
    extra={"restart": "a private node boots (and reboots after SIGKILL) in about 7 s"},
)
