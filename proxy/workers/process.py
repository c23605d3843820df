"""One worker process as its supervisor holds it: started, talked to, waited for, signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import trio

from proxy.workers.protocol import Message, Reader, frame


class WorkerProcess:
    """A started worker: its stdin carries the supervisor's messages (its end, the supervisor's
    end), a pipe of its own carries the worker's; a pidfd says when it exited."""

    def __init__(self, popen: subprocess.Popen[bytes], to_worker: int, from_worker: int) -> None:
        self._popen = popen
        self._to = trio.lowlevel.FdStream(to_worker)
        self._from_stream = trio.lowlevel.FdStream(from_worker)
        self._from = Reader(self._from_stream)
        self._pidfd = os.pidfd_open(popen.pid)
        self._send_lock = trio.Lock()  # a spec and a drain must not interleave on the pipe

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def send(self, message: Message) -> None:
        """Deliver `message`; one to a worker that has exited is dropped."""
        async with self._send_lock:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._to.send_all(frame(message))

    async def receive(self) -> Message | None:
        """The worker's next message; None once it closed its end (it exited)."""
        try:
            return await self._from.next()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None

    async def wait(self) -> int:
        """Its exit status, as subprocess gives it (-N: killed by signal N)."""
        if self._popen.returncode is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self._popen.wait()

    def signal(self, signum: int) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signum)

    async def aclose(self) -> None:
        """Close the pipes and the pidfd; a worker still running is killed and reaped first."""
        if self._popen.returncode is None:
            self.signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await self.wait()
        await trio.aclose_forcefully(self._to)
        await trio.aclose_forcefully(self._from_stream)
        os.close(self._pidfd)


def _import_path() -> str:
    """The supervisor's sys.path, for the worker to import the very same code: `python -m`
    would put the working directory first, where a package named like one of ours (a user's
    `config/`) would shadow it."""
    return os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)


def start_worker() -> WorkerProcess:
    """Start `python -m proxy.workers`, told this process is its supervisor.

    Runs on the trio thread on purpose: a worker asks to be signalled when the thread that
    started it ends (PR_SET_PDEATHSIG), and the trio thread lives as long as the supervisor.
    subprocess execs at once (no Python runs between fork and exec), so it is safe beside
    trio's threads."""
    status_read, status_write = os.pipe()  # both close-on-exec: no other child inherits them
    try:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-P",  # not the working directory first on sys.path: exactly the supervisor's
                "-m",
                "proxy.workers",
                "--status-fd",
                str(status_write),
                "--supervisor",
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            pass_fds=(status_write,),
            env={**os.environ, "PYTHONPATH": _import_path()},
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
    assert popen.stdin is not None
    to_worker = os.dup(popen.stdin.fileno())
    popen.stdin.close()
    return WorkerProcess(popen, to_worker, status_read)
