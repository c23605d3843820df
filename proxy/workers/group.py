"""The supervisor's workers: start them all, restart one that dies, drain them all."""

from __future__ import annotations

import collections
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from proxy.start_errors import ReportedStartError
from proxy.tls.workload_cert import WorkloadCert
from proxy.workers.process import WorkerProcess, start_worker
from proxy.workers.protocol import Drain, Failed, Listen, Quit, Ready, Renewed, WorkerSpec

log = logging.getLogger("meshwire.workers")

# A worker that dies unexpectedly is started again: a sidecar silently serving with fewer
# workers would be worse. One that keeps dying (RESTART_LIMIT exits within RESTART_WINDOW
# seconds) stops the group instead, and the supervisor exits 1.
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
RESTART_PAUSE, RESTART_PAUSE_MAX = 0.1, 5.0  # seconds before a restart (doubling, see _fill)
KILL_GRACE = 15.0  # seconds past drain_timeout (components closing, telemetry flushing)

SpecFor = Callable[[int, WorkloadCert | None], WorkerSpec]


def describe_exit(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with {status}"


@dataclass
class Slot:
    """One worker's place in the group, kept across its restarts."""

    index: int
    admin_path: str
    process: WorkerProcess | None = None
    ready: bool = False
    restarts: int = 0
    exit_status: int | None = None  # how its last worker ended once the group stopped
    exits: collections.deque[float] = field(default_factory=collections.deque)


class WorkerGroup:
    """N slots, each kept filled by one worker process until `shutdown`; then every worker is
    told to drain, and killed if it has not exited within drain_timeout + KILL_GRACE."""

    def __init__(
        self,
        spec_for: SpecFor,
        admin_paths: list[str],
        shutdown: trio.Event,
        drain_timeout: float,
        certificate: WorkloadCert | None,
    ) -> None:
        self.slots = [Slot(i, path) for i, path in enumerate(admin_paths)]
        self.shutdown = shutdown
        self.gave_up = False  # a worker kept dying: the group stopped itself
        self._spec_for = spec_for
        self._drain_timeout = drain_timeout
        self._certificate = certificate
        self._arrived: set[int] = set()  # slots ready once (or ended before): start-up's barrier
        self._all_started = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def ready(self) -> bool:
        return all(slot.ready for slot in self.slots)

    @property
    def exit_code(self) -> int:
        """0 when every worker drained and exited 0, else 1."""
        clean = all(slot.exit_status == 0 for slot in self.slots)
        return 0 if clean and not self.gave_up else 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker at once; started when all are ready (ReportedStartError, the
        others stopped, when one cannot start); returns when all have exited after a drain."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for slot in self.slots:
                nursery.start_soon(self._keep, slot)
            await self._all_started.wait()
            task_status.started()

    def renewed(self, certificate: WorkloadCert) -> None:
        """The supervisor renewed the workload certificate: every worker installs it, and
        workers started from now on get it."""
        self._certificate = certificate
        if self._nursery is None:
            return
        for slot in self.slots:
            if slot.process is not None:
                self._nursery.start_soon(slot.process.send, Renewed(certificate))

    def signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None:
                slot.process.signal(signum)

    def _arrive(self, slot: Slot) -> None:
        self._arrived.add(slot.index)
        if len(self._arrived) == len(self.slots) and not self._all_started.is_set():
            self._all_started.set()
            assert self._nursery is not None
            for each in self.slots:  # all bound and up: now every one listens, at once
                if each.process is not None:
                    self._nursery.start_soon(each.process.send, Listen())

    async def _keep(self, slot: Slot) -> None:
        await self._fill(slot)  # ReportedStartError when its first start fails
        self._arrive(slot)  # stopped (a shutdown while it started): no longer starting either

    async def _fill(self, slot: Slot) -> None:
        started = False
        pause = RESTART_PAUSE
        while not self.shutdown.is_set():
            process = start_worker()
            try:
                certificate = self._certificate
                await process.send(self._spec_for(slot.index, certificate))
                slot.process = process  # from now on, renewals are sent to it too
                if self._certificate is not None and self._certificate is not certificate:
                    await process.send(Renewed(self._certificate))  # renewed meanwhile
                status, lines, was_ready = await self._watch(slot, process)
            finally:
                slot.ready = False
                slot.process = None
                await process.aclose()
            if not started and not was_ready and not self.shutdown.is_set():
                # The first start failed: nothing serves yet, so start-up fails, said once.
                raise ReportedStartError(
                    lines or [f"meshwire: worker {slot.index} {describe_exit(status)} at start-up"]
                )
            started = True
            if self.shutdown.is_set():
                slot.exit_status = status
                return
            for line in lines:
                log.error("worker %d: %s", slot.index, line)
            if self._too_many_exits(slot):
                log.error(
                    "worker %d (pid %d) %s, its exit number %d within %gs: stopping all workers",
                    slot.index,
                    process.pid,
                    describe_exit(status),
                    RESTART_LIMIT,
                    RESTART_WINDOW,
                )
                self.gave_up = True
                slot.exit_status = status
                self.shutdown.set()
                return
            log.warning(
                "worker %d (pid %d) %s: restarting it",
                slot.index,
                process.pid,
                describe_exit(status),
            )
            slot.restarts += 1
            # One that had served comes back at once; one that cannot start, ever more slowly.
            pause = RESTART_PAUSE if was_ready else min(pause * 2, RESTART_PAUSE_MAX)
            with trio.move_on_at(trio.current_time() + pause):
                await self.shutdown.wait()
        if slot.exit_status is None:  # stopped while none ran (between restarts): nothing to drain
            slot.exit_status = 0

    def _too_many_exits(self, slot: Slot) -> bool:
        now = trio.current_time()
        slot.exits.append(now)
        while slot.exits and slot.exits[0] < now - RESTART_WINDOW:
            slot.exits.popleft()
        return len(slot.exits) >= RESTART_LIMIT

    async def _watch(self, slot: Slot, process: WorkerProcess) -> tuple[int, list[str], bool]:
        """Until the process exits: its exit status, the start-up failure it reported, and
        whether it was ever ready."""
        lines: list[str] = []
        was_ready = False
        async with trio.open_nursery() as watchers:
            watchers.start_soon(self._drain_on_shutdown, slot, process)
            while (message := await process.receive()) is not None:
                if isinstance(message, Ready):
                    slot.ready = was_ready = True
                    if self._all_started.is_set():  # a restart: its siblings listen already
                        await process.send(Listen())
                    else:
                        self._arrive(slot)
                elif isinstance(message, Failed):
                    lines.extend(message.lines)
                elif isinstance(message, Quit):
                    log.info("worker %d: the app asked the sidecar to shut down", slot.index)
                    self.shutdown.set()
            status = await process.wait()  # its end of the pipe closed: it has exited
            watchers.cancel_scope.cancel()
        return status, lines, was_ready

    async def _drain_on_shutdown(self, slot: Slot, process: WorkerProcess) -> None:
        await self.shutdown.wait()
        await process.send(Drain())
        await trio.sleep(self._drain_timeout + KILL_GRACE)
        log.error(
            "worker %d (pid %d) has not drained within %gs: killing it",
            slot.index,
            process.pid,
            self._drain_timeout + KILL_GRACE,
        )
        process.signal(signal.SIGKILL)
