"""The brokers the conformance suites run: how to reach each, what it promises, how to restart."""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from config.dapr.component import Component
from filters.pubsub.broker import Broker
from filters.pubsub.registry import construct

# Every backend module in tests/pubsub/backends/ exports FACTORY: a BrokerFactory.
BACKEND_ORDER = ("memory", "sqlite", "redis", "jetstream", "rabbitmq", "mqtt")


class PrivateBroker(Protocol):
    """A broker server of the test's own, on a free port, whose data survives `restart`."""

    metadata: dict[str, str]  # Component metadata that reaches this instance

    def restart(self) -> None:
        """Stop the server (as abruptly as the backend allows), start it again on the same
        port and data, and return once it accepts connections."""


def _nothing_required() -> None:
    pass


@dataclass(frozen=True)
class BrokerFactory:
    """How the suites build a broker of one type.

    `metadata(tmp_path)` is the Component metadata for the shared service (a file under
    tmp_path for embedded brokers). `require()` runs outside trio and skips (fails in CI)
    when the service is missing. `private(tmp_path)` starts a private server for the restart
    tests; None for brokers with no server (in-memory, SQLite)."""

    name: str
    type: str
    metadata: Callable[[Path], dict[str, str]]
    require: Callable[[], None] = _nothing_required
    durable: bool = True  # published messages survive a restart of the broker and of the sidecar
    shared: bool = True  # separate processes (sidecars) reach the same topics
    ordered: bool = True  # one subscriber with concurrency 1 receives in publish order
    native_ttl: bool = False  # the broker expires messages itself (Feature.MESSAGE_TTL)
    private: Callable[[Path], AbstractContextManager[PrivateBroker]] | None = None
    # The shared service's largest message, when it is below the suites' 1 MB event: those
    # tests then run on `private`, configured for more (NATS's default max_payload is 1 MB).
    max_payload: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # notes for humans, e.g. redelivery timing

    def __str__(self) -> str:
        return self.name


def factories() -> list[BrokerFactory]:
    """Every backend module's FACTORY, the known ones first in a stable order."""
    package = importlib.import_module("tests.pubsub.backends")
    found = {info.name for info in pkgutil.iter_modules(package.__path__)}
    names = [n for n in BACKEND_ORDER if n in found] + sorted(found - set(BACKEND_ORDER))
    return [importlib.import_module(f"tests.pubsub.backends.{name}").FACTORY for name in names]


def component(
    type_: str, metadata: dict[str, str], name: str = "conformance", scopes: tuple[str, ...] = ()
) -> Component:
    return Component(
        name=name,
        namespace="default",
        type=type_,
        version="v1",
        init_timeout=10.0,
        ignore_errors=False,
        metadata=metadata,
        secret_refs={},
        scopes=scopes,
    )


@asynccontextmanager
async def open_broker(
    factory: BrokerFactory, tmp_path: Path, metadata: dict[str, str] | None = None
) -> AsyncIterator[Broker]:
    """An initialised broker of `factory`'s type; `metadata` overrides the factory's."""
    merged = {**factory.metadata(tmp_path), **(metadata or {})}
    broker = construct(component(factory.type, merged), tmp_path)
    await broker.init()
    try:
        yield broker
    finally:
        await broker.aclose()


@contextmanager
def big_message_server(factory: BrokerFactory, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Metadata overrides that reach a server taking 1 MB events: none for most brokers, a
    private server's for those whose shared service is capped below that."""
    if factory.max_payload is None or factory.private is None:
        yield {}
        return
    with factory.private(tmp_path / "big-server") as server:
        yield server.metadata


TEST_TOPIC_PREFIX = "mwtest-"  # every topic the suites create; tests/pubsub/conftest.py purges


def unique_topic(prefix: str = "conf") -> str:
    return f"{TEST_TOPIC_PREFIX}{prefix}-{uuid.uuid4().hex[:12]}"


def require_service(service: str, address: tuple[str, int]) -> None:
    """Skip when the service is unreachable; in CI (CI=true) it must be there, so fail."""
    from tests.state.stores import require_service as require

    require(service, address)


def unavailable(reason: str) -> None:
    """Skip for `reason`; in CI (CI=true) everything must be there, so fail."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, deadline: float = 30) -> None:
    """Block until 127.0.0.1:`port` accepts connections (a private server came up)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {deadline}s")


class ServerProcess:
    """A broker server of the test's own: `command` listening on `port`, its data under a
    directory of the test's. `stop` kills it (SIGTERM when `graceful`, for servers that save on
    the way out); `start` runs the same command again, on the same port and data."""

    def __init__(
        self, command: list[str], port: int, metadata: dict[str, str], *, graceful: bool = False
    ) -> None:
        self.command = command
        self.port = port
        self.metadata = metadata
        self.graceful = graceful
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self._process)

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, kill=not self.graceful)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """`server` started for the block (skipped when its program is not installed)."""
    if shutil.which(server.command[0]) is None:
        pytest.skip(f"{server.command[0]} is not installed")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stop_process(process: subprocess.Popen[bytes], *, kill: bool = True) -> None:
    if process.poll() is None:
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
