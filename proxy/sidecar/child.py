"""`meshwire run --app-id … -- CMD ARGS`: start the app as a child, as `dapr run` does."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping, Sequence

import trio

log = logging.getLogger("meshwire.sidecar")

STOP_GRACE = 5.0  # seconds the app gets between SIGTERM and SIGKILL


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
) -> None:
    """Run the app until it exits (then shut the sidecar down) or the sidecar drains (then stop
    the app: SIGTERM, and SIGKILL after STOP_GRACE)."""
    env = {**os.environ, **extra_env}
    process = await trio.lowlevel.open_process(list(command), env=env)
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
        log.info("the app exited with %s", code)
        shutdown.set()
        nursery.cancel_scope.cancel()
