"""README's sidecar walkthrough, run as written: its commands, its ports, its expected output."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Sidecar mode (Dapr)"
WALKTHROUGH = "### Walkthrough"
READY = "subscribed to topic orders"  # what the README tells the reader to wait for
ACTIVATE = [".", ".venv/bin/activate"]  # stood in for by running this interpreter
DEADLINE = 60


@dataclass
class Walkthrough:
    sidecars: list[list[str]]  # `meshwire run …` command lines, in the order given
    calls: list[list[str]]  # `curl …` command lines
    replies: list[str]  # expected output lines of the calls
    app_lines: dict[str, list[str]]  # app id → the lines its terminal shows, in order


def walkthrough(readme: str) -> Walkthrough:
    """The walkthrough's commands and expected output, from its fenced blocks: `sh` blocks hold
    commands (`\\` continues a line), `text` blocks output; a line `APP: …` is app APP's."""
    section = readme.partition(f"\n{SECTION}\n")[2].partition("\n## ")[0]
    assert section, f"README.md has no {SECTION!r} section"
    part = section.partition(f"\n{WALKTHROUGH}")[2].partition("\n### ")[0]
    assert part, f"README.md's {SECTION!r} has no {WALKTHROUGH!r} subsection"
    found = Walkthrough([], [], [], {})
    for kind, body in re.findall(r"^```(\w*)\n(.*?)^```$", part, re.MULTILINE | re.DOTALL):
        if kind == "sh":
            for line in body.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv[:2] == ["meshwire", "run"]:
                    found.sidecars.append(argv)
                elif argv[:1] == ["curl"]:
                    found.calls.append(argv)
                else:  # a new kind of step needs this test to run it too
                    assert argv in ([], ACTIVATE), f"the test cannot run this step: {line}"
        elif kind == "text":
            for line in body.splitlines():
                app, colon, _ = line.partition(": ")
                if colon and app.isidentifier():
                    found.app_lines.setdefault(app, []).append(line)
                else:
                    found.replies.append(line)
    return found


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"the README's command does not give {name}: {shlex.join(argv)}"
    return argv[argv.index(name) + 1]


def runnable(argv: list[str]) -> list[str]:
    """`meshwire` as this interpreter's `-m proxy`, and the app's `python` as this interpreter
    (what `. .venv/bin/activate` puts on PATH)."""
    cut = argv.index("--")
    app = [sys.executable if word == "python" else word for word in argv[cut + 1 :]]
    return [sys.executable, "-m", "proxy", *argv[1:cut], "--", *app]


def require_free(ports: list[int]) -> None:
    """The README's fixed ports must be free: fail in CI, skip on a busy workstation."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                reason = f"port {port}, fixed by the README's walkthrough, is busy: {exc}"
                if os.environ.get("CI") == "true":
                    pytest.fail(reason)
                pytest.skip(reason)


@dataclass
class Output:
    """What a process wrote to one pipe so far; `changed` is set on every chunk."""

    text: str = ""
    changed: trio.Event = field(default_factory=trio.Event)

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            self.text += chunk.decode(errors="replace")
            self.changed.set()
            self.changed = trio.Event()


@dataclass
class Terminal:
    """One `meshwire run` of the walkthrough, as its terminal shows it."""

    argv: list[str]
    process: trio.Process
    stdout: Output = field(default_factory=Output)
    stderr: Output = field(default_factory=Output)

    async def logged(self, text: str) -> None:
        await self.wait_until(lambda: text in self.stderr.text, f"logging {text!r}")

    async def printed(self, count: int) -> list[str]:
        """The lines on stdout (the app's output) once there are at least `count`."""
        await self.wait_until(lambda: len(self.stdout.text.splitlines()) >= count, "printing")
        return self.stdout.text.splitlines()

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for output that makes `condition` true; fail if the process exits first."""
        with trio.move_on_after(DEADLINE):
            while not condition():
                if self.process.poll() is not None:
                    self.fail(f"exited with {self.process.returncode} before {what}")
                async with trio.open_nursery() as nursery:  # until new output or an exit
                    for wait in (self.stdout.changed.wait, self.stderr.changed.wait):
                        nursery.start_soon(_then_cancel, wait, nursery.cancel_scope)
                    nursery.start_soon(_then_cancel, self.process.wait, nursery.cancel_scope)
            return
        self.fail(f"was not {what} after {DEADLINE} s")

    def fail(self, what: str) -> NoReturn:
        pytest.fail(
            f"`{shlex.join(self.argv)}` {what}; stdout:\n{self.stdout.text}\n"
            f"stderr:\n{self.stderr.text}"
        )


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


@asynccontextmanager
async def terminal(argv: list[str], env: dict[str, str]) -> AsyncIterator[Terminal]:
    """`argv` run from the repository's root as in a terminal; at the end the sidecar gets
    SIGTERM (it stops its app), then whatever is left of its process group is killed."""
    process = await trio.lowlevel.open_process(
        runnable(argv),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    term = Terminal(argv, process)
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(term.stdout.pump, process.stdout)
            nursery.start_soon(term.stderr.pump, process.stderr)
            try:
                yield term
            finally:
                with trio.CancelScope(shield=True):
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
                        with trio.move_on_after(DEADLINE):
                            await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the app, if its sidecar left it behind
        with trio.CancelScope(shield=True):
            await process.wait()


@pytest.fixture
def steps() -> Walkthrough:
    """The walkthrough, once its fixed ports are free (checked here: a skip in a trio test
    loses its reason)."""
    found = walkthrough((ROOT / "README.md").read_text())
    assert len(found.sidecars) >= 2, "the walkthrough starts two sidecars"
    assert found.calls, "the walkthrough calls an app with curl"
    assert found.app_lines, "the walkthrough shows what the apps print"
    ports: list[int] = []
    for argv in found.sidecars:
        ports += [int(flag(argv, name)) for name in ("--app-port", "--dapr-http-port")]
        ports.append(int(flag(argv, "--dapr-grpc-port")))
    assert len(set(ports)) == len(ports), f"two sidecars or apps are given one port: {ports}"
    if shutil.which("curl") is None:
        pytest.skip("the walkthrough calls curl, which is not installed")
    require_free(ports)
    return found


async def test_the_readme_sidecar_walkthrough_runs_as_written(
    steps: Walkthrough, tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    assert curl is not None
    env = {**os.environ, "MESHWIRE_DATA_DIR": str(tmp_path / "data")}  # not ~/.meshwire
    async with contextlib.AsyncExitStack() as stack:
        terminals: dict[str, Terminal] = {}
        for argv in steps.sidecars:  # each is ready, as the reader waits, before the next step
            term = await stack.enter_async_context(terminal(argv, env))
            terminals[flag(argv, "--app-id")] = term
            await term.logged(READY)
        replies: list[str] = []
        for argv in steps.calls:
            with trio.fail_after(DEADLINE):
                result = await trio.run_process(
                    [curl, *argv[1:]], cwd=ROOT, capture_stdout=True, check=False
                )
            assert result.returncode == 0, f"`{shlex.join(argv)}` exited {result.returncode}"
            replies += result.stdout.decode().splitlines()
        assert replies == steps.replies
        for app, expected in steps.app_lines.items():
            assert app in terminals, f"the README shows output of {app}, which no terminal runs"
            assert await terminals[app].printed(len(expected)) == expected
