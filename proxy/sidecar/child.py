"""`meshwire run --app-id … -- CMD ARGS`: start the app as a child, as `dapr run` does."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping, Sequence

import trio

from proxy.reasons import os_reason

log = logging.getLogger("meshwire.sidecar")

STOP_GRACE = 5.0  # seconds the app gets between SIGTERM and SIGKILL


class AppStartError(Exception):
    """The app's command could not be started (not found, not executable): the sidecar stops."""

    def __init__(self, command: str, reason: str) -> None:
        self.command = command
        self.reason = reason
        super().__init__(f"cannot start the app {command!r}: {reason}")


def exit_status(returncode: int) -> int:
    """A child's exit as a shell reports it: its exit code, or 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def _start_reason(command: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file" if os.sep in command else "command not found"
    if isinstance(exc, PermissionError):
        return "permission denied (is it an executable file?)"
    return os_reason(exc)


def app_environment(
    app_id: str, http_port: int, grpc_port: int, app_port: int | None, metrics_port: int | None
) -> dict[str, str]:
    """What the Dapr SDKs read to find their sidecar."""
    env = {"APP_ID": app_id, "DAPR_HTTP_PORT": str(http_port), "DAPR_GRPC_PORT": str(grpc_port)}
    if app_port:
        env["APP_PORT"] = str(app_port)
    if metrics_port:
        env["DAPR_METRICS_PORT"] = str(metrics_port)
    return env


async def run_app(
    command: Sequence[str], extra_env: Mapping[str, str], shutdown: trio.Event
) -> int | None:
    """Run the app until it exits (then shut the sidecar down) or the sidecar drains (then stop
    the app: SIGTERM, and SIGKILL after STOP_GRACE).

    Returns the app's exit status (see `exit_status`) when it ended on its own, None when the
    sidecar stopped it. AppStartError when the command cannot be started at all."""
    env = {**os.environ, **extra_env}
    try:
        process = await trio.lowlevel.open_process(list(command), env=env)
    except OSError as exc:
        raise AppStartError(command[0], _start_reason(command[0], exc)) from exc
    log.info("started the app: %s (pid %d)", " ".join(command), process.pid)
    async with trio.open_nursery() as nursery:

        async def stop_when_draining() -> None:
            await shutdown.wait()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_GRACE):
                    await process.wait()
                if process.returncode is None:
                    process.kill()

        nursery.start_soon(stop_when_draining)
        code = await process.wait()
        stopped = shutdown.is_set()  # by us, draining: not the app's own ending
        if code < 0:
            log.info("the app was killed by signal %d", -code)
        else:
            log.info("the app exited with %d", code)
        shutdown.set()
        nursery.cancel_scope.cancel()
    return None if stopped else exit_status(code)
