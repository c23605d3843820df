"""Sidecars in this process: Dapr-mode configs from real `meshwire run --app-id` flags."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from config import schema
from config.loader import check_references
from proxy.cli import parse_args
from proxy.run_config import load_run_config
from tests.integration.harness import Running, meshwire


def sidecar_args(app_id: str, app_port: int | None, data_dir: Path, *extra: str) -> list[str]:
    args = ["run", "--app-id", app_id, "--dapr-http-port", "0", "--data-dir", str(data_dir)]
    if "--dapr-grpc-port" not in extra:
        args += ["--dapr-grpc-port", "0"]
    if "--metrics-port" not in extra:
        args.append("--no-admin")
    if app_port is not None:
        args += ["--app-port", str(app_port)]
    return [*args, *extra]


def generated(argv: list[str]) -> schema.Config:
    """The config `meshwire run ARGV` would serve (Dapr Configuration and resources applied)."""
    config = load_run_config(parse_args(argv))
    assert check_references(config) == []
    return config


@asynccontextmanager
async def sidecar(
    app_id: str,
    app_port: int | None,
    data_dir: Path,
    *extra: str,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[Running]:
    """A sidecar for `app_id`, serving until the block ends; outbound-ready when yielded."""
    config = generated(sidecar_args(app_id, app_port, data_dir, *extra))
    async with meshwire(config, environ=environ) as running:
        assert running.app.sidecar is not None
        await running.app.sidecar.outbound_ready.wait()
        yield running
