"""A sidecar stand-in for the two-process test: register into a shared file, wait for the peer.

Usage: python -m tests.discovery.sqlite_worker DATABASE APP_ID PORT PEER_APP_ID
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from proxy.discovery.base import Instance
from proxy.discovery.sqlite import SqliteResolver


async def main(database: str, app_id: str, port: int, peer: str) -> None:
    resolver = SqliteResolver.from_config(
        {"connectionString": database, "updateInterval": "30s"}, data_dir=Path(database).parent
    )
    await resolver.register(Instance(app_id, "default", "127.0.0.1", port))
    for _ in range(50):  # write while the other process writes: both wait on the busy timeout
        await resolver.heartbeat()
    with trio.fail_after(20):
        while not await resolver.resolve(peer, "default"):
            resolver.invalidate(peer, "default")
            await trio.sleep(0.02)
    # No aclose: the row must stay so the test process sees both sidecars.
    print(f"{app_id} saw {peer}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
