"""`make demo`: a demo backend and meshwire in front of it, with what to curl printed."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from config import schema
from config.loader import load_file
from proxy.app import build
from proxy.downstream.context import ConnectionContext
from proxy.downstream.negotiate import serve_connection
from proxy.http.model import BytesBody, Request, Response, read_all
from proxy.server import Bound, serve
from proxy.stats import ListenerStats, Stats

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "examples" / "demo.yaml"
BACKEND_PORT = 18080


async def demo_backend(request: Request) -> Response:
    """Answers every request with what it saw, so the proxy's work is visible."""
    body = await read_all(request.body, 1 << 20)
    seen = {
        "hello": "from the demo backend",
        "method": request.method.decode(),
        "path": request.target.decode(),
        "http_version": request.http_version,
        "headers": {k.decode(): v.decode("latin-1") for k, v in request.headers},
        "body_bytes": len(body),
    }
    data = json.dumps(seen, indent=2).encode() + b"\n"
    return Response(
        200,
        [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        BytesBody(data),
    )


async def _serve_backend(
    port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    stats = ListenerStats(Stats(), "demo_backend")

    async def on_connection(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await serve_connection(stream, ConnectionContext(demo_backend, schema.Limits(), stats))

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(int(listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(on_connection, listeners)


def _ephemeral(config: schema.Config, backend_port: int) -> schema.Config:
    """The demo config with every port picked by the kernel (for tests and busy machines)."""
    listeners = [msgspec.structs.replace(lc, address="127.0.0.1:0") for lc in config.listeners]
    clusters = [
        msgspec.structs.replace(c, endpoints=[f"127.0.0.1:{backend_port}"]) for c in config.clusters
    ]
    return msgspec.structs.replace(
        config, listeners=listeners, clusters=clusters, admin=schema.Admin(address="127.0.0.1:0")
    )


async def _get(port: int, target: str) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET, to show the demo working without curl."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def run_demo(check: bool, ephemeral: bool) -> int:
    config = load_file(DEMO_CONFIG)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        backend_port = await nursery.start(_serve_backend, 0 if ephemeral else BACKEND_PORT)
        if ephemeral:
            config = _ephemeral(config, backend_port)
        bound: Bound = await nursery.start(serve, build(config), shutdown)
        ingress = bound.addresses["ingress"][1]
        admin = bound.addresses["admin"][1]
        print(f"meshwire is proxying 127.0.0.1:{ingress} -> demo backend 127.0.0.1:{backend_port}")
        print("try:")
        print(f"  curl -i http://127.0.0.1:{ingress}/hello")
        print(f"  curl -i --http2-prior-knowledge http://127.0.0.1:{ingress}/hello")
        print(f"  curl -i http://127.0.0.1:{ingress}/healthz")
        print(f"  curl -i http://127.0.0.1:{ingress}/nowhere     # no route: 404 with flag NR")
        print(f"  curl http://127.0.0.1:{admin}/stats")
        print(f"  curl http://127.0.0.1:{admin}/stats/prometheus")
        print(f"  curl http://127.0.0.1:{admin}/clusters")
        failures = 0
        for target, want in (("/hello", 200), ("/healthz", 200), ("/nowhere", 404)):
            status, body = await _get(ingress, target)
            ok = status == want
            failures += not ok
            print(f"self-check GET {target}: {status} {'ok' if ok else f'expected {want}'}")
        status, body = await _get(admin, "/stats?filter=downstream_rq_&usedonly")
        print(f"admin /stats after the self-check ({status}):\n{body.decode()}")
        if check:
            shutdown.set()
            nursery.cancel_scope.cancel()
        else:
            print("Ctrl-C to stop.")
            with trio.open_signal_receiver(2, 15) as signals:
                async for _ in signals:
                    break
            shutdown.set()
            nursery.cancel_scope.cancel()
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.demo", description=__doc__)
    parser.add_argument("--check", action="store_true", help="run the self-check and exit")
    parser.add_argument(
        "--ephemeral", action="store_true", help="use free ports instead of the fixed ones"
    )
    args = parser.parse_args(argv)
    return trio.run(run_demo, args.check, args.ephemeral)


if __name__ == "__main__":
    sys.exit(main())
