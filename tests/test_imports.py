"""The generic top-level names (proxy, filters, exporters, config) come from this repository, and
a sidecar process imports the optional libraries only when its configuration uses them."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import trio
import trio.lowlevel
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from dapr.proto.runtime.v1.metadata_pb2 import GetMetadataRequest, GetMetadataResponse

import config
import exporters
import filters
import proxy
from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, Reply, backend
from tests.integration.test_process import free_port
from tests.state.stores import REDIS_ADDRESS, require_service

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60

# Each stands for a library (and everything it pulls in) that only some configurations need.
OPTIONAL = {
    "grpc": "grpcio: never needed, meshwire speaks gRPC over its own HTTP/2",
    "cryptography.hazmat": "the CA: a sidecar issues its certificates in a child process",
    "google.protobuf": "protobuf: the gRPC API and gRPC apps",
    "dapr": "Dapr's generated messages: the gRPC API and gRPC apps",
    "celpy": "CEL: subscriptions with a `match` rule",
    "lark": "CEL's parser",
    "dns.resolver": "dnspython: the dns name resolver",
    "requests": "the Zipkin exporter's transport, once a span is sampled",
    "opentelemetry.exporter.otlp": "OTLP exporters",
    "redis": "state.redis, pubsub.redis",
    "psycopg": "state.postgresql",
    "nats": "pubsub.jetstream",
    "aio_pika": "pubsub.rabbitmq",
    "paho": "pubsub.mqtt3",
}

# `meshwire run ARGS` in this process, then the modules it imported, written to a file (argv[1]).
RUN_THEN_LIST_MODULES = """
import json, sys
from proxy.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def test_top_level_packages_are_this_repository() -> None:
    for module in (proxy, filters, exporters, config):
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().parent.parent == ROOT


async def test_trio_mode_runs_async_tests() -> None:
    await trio.lowlevel.checkpoint()
    assert trio.lowlevel.current_task().name


@dataclass
class Sidecar:
    http: int
    grpc: int
    modules: set[str] = field(default_factory=set)  # filled in once the process has exited

    def loaded(self, name: str) -> bool:
        """Whether `name` or any module under it was imported."""
        return any(m == name or m.startswith(f"{name}.") for m in self.modules)


@asynccontextmanager
async def sidecar(tmp_path: Path, app_id: str, *args: str) -> AsyncIterator[Sidecar]:
    """`meshwire run --app-id APP_ID ARGS` as a process, outbound-ready when yielded; stopped
    with SIGTERM when the block ends, after which `modules` holds every module it imported."""
    running = Sidecar(free_port(), free_port())
    listing = tmp_path / f"modules-{app_id}.json"
    argv = ["run", "--app-id", app_id, "--dapr-http-port", str(running.http), "--no-admin"]
    argv += ["--dapr-grpc-port", str(running.grpc), "--data-dir", str(tmp_path / "data")]
    argv += ["--log-level", "warning", *args]
    command = [sys.executable, "-c", RUN_THEN_LIST_MODULES, str(listing), *argv]
    proc = await trio.lowlevel.open_process(command, cwd=ROOT)
    try:
        with trio.fail_after(DEADLINE):
            while True:
                assert proc.poll() is None, "the sidecar exited during start-up"
                try:
                    reply = await call(running.http, "GET", "/v1.0/healthz/outbound")
                except (OSError, trio.BrokenResourceError):
                    await trio.sleep(0.05)
                    continue
                if reply.status == 204:
                    break
        yield running
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(DEADLINE):
            assert await proc.wait() == 0
        listed = json.loads(listing.read_text())
        assert listed["code"] == 0
        running.modules = set(listed["modules"])
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()


async def call(
    port: int,
    method: str,
    target: str,
    body: object = None,
    content_type: str = "application/json",
) -> Reply:
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [("content-type", content_type)] if payload else []
    async with H1Client.connect(port) as client:
        return await client.request(method, target, headers, payload)


def configuration(tmp_path: Path, sampling_rate: str, resolver: str = "sqlite") -> str:
    """A Dapr Configuration: Zipkin tracing (to a closed port) and the name resolver."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: imports}\nspec:\n"
        f"  tracing:\n    samplingRate: '{sampling_rate}'\n"
        f"    zipkin: {{endpointAddress: 'http://127.0.0.1:{free_port()}/api/v2/spans'}}\n"
        f"  nameResolution: {{component: {resolver}}}\n"
    )
    return str(path)


async def state_and_pubsub_work(port: int) -> None:
    """A value saved to `statestore` reads back, and `pubsub` takes a publish."""
    key = f"k-{uuid.uuid4().hex}"
    saved = await call(port, "POST", "/v1.0/state/statestore", [{"key": key, "value": 7}])
    assert saved.status == 204
    read = await call(port, "GET", f"/v1.0/state/statestore/{key}")
    assert (read.status, json.loads(read.body)) == (200, 7)
    published = await call(port, "POST", "/v1.0/publish/pubsub/imports", {"n": 1})
    assert published.status == 204


async def test_a_bare_sidecar_imports_no_optional_library(tmp_path: Path) -> None:
    """The embedded stores, the gRPC API listening but never called, Zipkin configured but
    nothing sampled: none of the optional libraries is imported, even by the HTTP API's work."""
    config_file = configuration(tmp_path, sampling_rate="0")
    async with sidecar(tmp_path, "bare", "--config", config_file) as running:
        await state_and_pubsub_work(running.http)
        metadata = await call(running.http, "GET", "/v1.0/metadata")
        assert metadata.status == 200
    loaded = {name: why for name, why in OPTIONAL.items() if running.loaded(name)}
    assert loaded == {}


def grpc_metadata(port: int) -> GetMetadataResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)  # type: ignore[no-untyped-call]
        reply: GetMetadataResponse = stub.GetMetadata(GetMetadataRequest(), timeout=DEADLINE)
        return reply


def component(name: str, type_: str) -> str:
    host, port = REDIS_ADDRESS
    return (
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
        f"spec:\n  type: {type_}\n  version: v1\n"
        f"  metadata: [{{name: redisHost, value: '{host}:{port}'}}]\n"
    )


class SubscribingApp:
    """An app with no programmatic subscriptions that takes every event it is sent."""

    def __init__(self) -> None:
        self.delivered, self.deliveries = trio.open_memory_channel[tuple[str, dict[str, object]]](
            16
        )

    async def __call__(self, request: Request) -> Response:
        body = b""
        while chunk := await request.body.read():
            body += chunk
        if request.method == b"POST":
            await self.delivered.send((request.target.decode(), json.loads(body)))
            data = b'{"status": "SUCCESS"}'
        else:
            data = b"[]"  # GET /dapr/subscribe
        return Response(200, [(b"content-type", b"application/json")], BytesBody(data))


async def test_what_the_configuration_names_is_imported_and_works(tmp_path: Path) -> None:
    """Redis components, a subscription with a CEL rule, the dns resolver, sampled Zipkin
    spans and a gRPC API call each bring their library, and work; grpcio still never loads."""
    require_service("Redis", REDIS_ADDRESS)
    app_id = f"imports-{uuid.uuid4().hex[:8]}"
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "state.yaml").write_text(component("statestore", "state.redis"))
    (resources / "pubsub.yaml").write_text(component("pubsub", "pubsub.redis"))
    (resources / "subscription.yaml").write_text(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: refunds}\n"
        f"spec:\n  pubsubname: pubsub\n  topic: {app_id}\n  routes:\n"
        "    rules: [{match: 'event.type == \"refund\"', path: /refunds}]\n"
        "    default: /orders\n"
    )
    config_file = configuration(tmp_path, sampling_rate="1", resolver="dns")
    app = SubscribingApp()
    async with backend(app) as app_port:
        args = ["--config", config_file, "--resources-path", str(resources)]
        args += ["--app-port", str(app_port)]
        async with sidecar(tmp_path, app_id, *args) as running:
            await state_and_pubsub_work(running.http)
            reply = await trio.to_thread.run_sync(grpc_metadata, running.grpc)
            assert reply.id == app_id
            types = {c.name: c.type for c in reply.registered_components}
            assert types == {"statestore": "state.redis", "pubsub": "pubsub.redis"}
            with trio.fail_after(DEADLINE):
                while True:  # the subscription starts once the app listens
                    served = await trio.to_thread.run_sync(grpc_metadata, running.grpc)
                    if served.subscriptions:
                        break
                    await trio.sleep(0.05)
                refund = {"specversion": "1.0", "id": "1", "source": "t", "type": "refund"}
                sent = await call(
                    running.http,
                    "POST",
                    f"/v1.0/publish/pubsub/{app_id}",
                    {**refund, "datacontenttype": "application/json", "data": {"n": 2}},
                    content_type="application/cloudevents+json",
                )
                assert sent.status == 204
                path, event = await app.deliveries.receive()
            assert (path, event["type"], event["data"]) == ("/refunds", "refund", {"n": 2})
    for name in ("redis", "celpy", "dns.resolver", "requests", "google.protobuf", "dapr"):
        assert running.loaded(name), f"{name} ({OPTIONAL[name]}) was not imported"
    never = ("grpc", "cryptography.hazmat", "psycopg", "nats", "aio_pika", "paho")
    for name in (*never, "opentelemetry.exporter.otlp"):
        assert not running.loaded(name), f"{name} ({OPTIONAL[name]}) was imported"
