"""`meshwire run --concurrency N` as a real process tree, and what its admin port says."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.integration.harness import H1Client, Reply
from tests.integration.test_process import free_port, meshwire_cmd

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 90  # seconds: N+1 interpreters importing everything, on a busy machine


@dataclass
class Supervised:
    """The supervisor process, its admin port and the file its stderr goes to."""

    process: trio.Process
    admin: int
    log: Path

    async def get(self, target: str) -> Reply:
        return await request(self.admin, "GET", target)

    async def stat(self, name: str, worker: int | None = None) -> int:
        target = f"/stats?format=json&filter=^{name}$"
        if worker is not None:
            target += f"&worker={worker}"
        reply = await self.get(target)
        assert reply.status == 200, reply.body
        [found] = json.loads(reply.body)["stats"]
        value: int = found["value"]
        return value

    async def workers(self) -> list[dict[str, object]]:
        reply = await self.get("/server_info")
        workers: list[dict[str, object]] = json.loads(reply.body)["workers"]
        return workers

    def stderr(self) -> str:
        return self.log.read_text()


async def request(port: int, method: str, target: str) -> Reply:
    async with H1Client.connect(port) as client:
        return await client.request(method, target)


async def until_ready(supervised: Supervised) -> None:
    """Until the admin port answers /ready with 200 (every worker serving)."""
    with trio.fail_after(DEADLINE):
        while True:
            assert supervised.process.poll() is None, supervised.stderr()
            try:
                reply = await supervised.get("/ready")
            except OSError:
                reply = None
            if reply is not None and reply.status == 200:
                return
            await trio.sleep(0.1)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def until(condition: Callable[[], Awaitable[bool]], poll: float = 0.05) -> None:
    """Until `condition()` holds, failing after DEADLINE seconds."""
    with trio.fail_after(DEADLINE):
        while True:
            if await condition():
                return
            await trio.sleep(poll)


async def until_gone(pids: list[int]) -> None:
    async def gone() -> bool:
        return not any(alive(pid) for pid in pids)

    await until(gone)


@asynccontextmanager
async def supervised(
    tmp_path: Path,
    *args: str,
    workers: int = 2,
    exit_code: int | None = 0,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Supervised]:
    """`meshwire run ARGS --concurrency N [-- CMD]`, ready (every worker serving) when yielded;
    at the end SIGTERM, and it must exit with `exit_code` (None: any) leaving no worker."""
    admin = free_port()
    log = tmp_path / f"meshwire-{admin}.log"
    options = list(args)
    command: list[str] = []
    if "--" in options:
        command = options[options.index("--") :]
        options = options[: options.index("--")]
    # A sidecar's admin port is Dapr's metrics port.
    admin_flag = (
        ["--metrics-port", str(admin)]
        if "--app-id" in options
        else ["--admin", f"127.0.0.1:{admin}"]
    )
    argv = ["run", *options, "--concurrency", str(workers), *admin_flag, *command]
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            meshwire_cmd(*argv), cwd=ROOT, stderr=stderr, env=env
        )
    running = Supervised(process, admin, log)
    pids: list[int] = []
    try:
        await until_ready(running)
        pids = [int(str(w["pid"])) for w in await running.workers()]
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(DEADLINE):
                await process.wait()
            if process.poll() is None:
                process.kill()
                await process.wait()
                raise AssertionError("meshwire did not drain and exit on SIGTERM")
    if exit_code is not None:
        assert process.returncode == exit_code, running.stderr()
    await until_gone(pids)
