"""The generated sidecar config: which listeners cap connections per client."""

from __future__ import annotations

from pathlib import Path

from config import schema
from proxy.cli import parse_args
from proxy.sidecar.options import INTERNAL_LISTENER, sidecar_config


def test_app_facing_listeners_do_not_cap_the_one_local_app(tmp_path: Path) -> None:
    args = parse_args(["run", "--app-id", "orders", "--data-dir", str(tmp_path)])
    listeners = {listener.name: listener.limits for listener in sidecar_config(args).listeners}
    # Every connection to the Dapr APIs comes from the app: one address with a big pool.
    for name in ("dapr-http", "dapr-grpc"):
        assert listeners[name].max_connections_per_client == listeners[name].max_connections
    # Other sidecars call in from their own addresses: the default cap stays.
    default = schema.Limits().max_connections_per_client
    assert listeners[INTERNAL_LISTENER].max_connections_per_client == default
