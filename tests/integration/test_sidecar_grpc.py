"""Dapr's gRPC API with the official Python SDK, gRPC apps (AppCallback), and gRPC proxying."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import trio
from dapr.clients import DaprClient
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2_grpc, dapr_pb2_grpc
from dapr.proto.runtime.v1.metadata_pb2 import GetMetadataRequest, GetMetadataResponse

from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, Reply, Running, backend
from tests.integration.sidecars import sidecar

T = TypeVar("T")
Sdk = Callable[..., Awaitable[Any]]  # sdk(running, work, token=None): work(client)'s result
ECHO = "meshwire.test.Echo"
DEADLINE = 20
GRPC_INVOKE = pytest.mark.filterwarnings(
    "ignore:invoke_method with protocol gRPC is deprecated:DeprecationWarning"
)


# --- apps ------------------------------------------------------------------------------------


class HttpApp:
    """An HTTP app answering with what it received (verb, target, body, headers)."""

    async def __call__(self, request: Request) -> Response:
        body = b""
        while chunk := await request.body.read():
            body += chunk
        seen = {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "body": body.decode(),
            "headers": {k.decode(): v.decode() for k, v in request.headers},
        }
        if request.target.startswith(b"/missing"):
            return Response.text(404, "no such thing")
        data = json.dumps(seen).encode()
        return Response(200, [(b"content-type", b"application/json")], BytesBody(data))


@dataclass
class GrpcApp:
    """A grpcio server: Dapr's AppCallback (OnInvoke) and an Echo service of its own."""

    port: int
    invoked: list[tuple[common_pb2.InvokeRequest, dict[str, str]]] = field(default_factory=list)


class _Callback(appcallback_pb2_grpc.AppCallbackServicer):
    def __init__(self, app: GrpcApp) -> None:
        self.app = app

    def OnInvoke(
        self, request: common_pb2.InvokeRequest, context: grpc.ServicerContext
    ) -> common_pb2.InvokeResponse:
        self.app.invoked.append((request, dict(context.invocation_metadata())))
        if request.method == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
        reply = common_pb2.InvokeResponse(content_type="text/plain")
        reply.data.value = b"charged:" + request.data.value
        return reply


def _caller(context: grpc.ServicerContext) -> bytes:
    caller: str = dict(context.invocation_metadata()).get("dapr-caller-app-id", "?")
    return caller.encode()


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-echo", "done"),))
    return b"echo:" + request + b" from " + _caller(context)


def _chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for message in requests:
        yield b"pong:" + message


@pytest.fixture
def grpc_app() -> Iterator[GrpcApp]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                ECHO,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_echo),
                    "Chat": grpc.stream_stream_rpc_method_handler(_chat),
                },
            ),
        )
    )
    app = GrpcApp(server.add_insecure_port("127.0.0.1:0"))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(_Callback(app), server)  # type: ignore[no-untyped-call]
    server.start()
    try:
        yield app
    finally:
        server.stop(grace=None).wait()


# --- the SDK in a worker thread ---------------------------------------------------------------


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Sdk:
    """Runs `work(client)` with a DaprClient for a sidecar, in a thread; the SDK reads its
    settings (HTTP port for its health wait, invocation protocol, token) from the environment."""
    monkeypatch.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", "grpc")
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", str(DEADLINE))

    async def run(
        running: Running, work: Callable[[DaprClient], T], *, token: str | None = None
    ) -> T:
        monkeypatch.setenv("DAPR_HTTP_PORT", str(running.port("dapr-http")))
        if token is not None:
            monkeypatch.setenv("DAPR_API_TOKEN", token)

        def in_thread() -> T:
            with DaprClient(address=f"127.0.0.1:{running.port('dapr-grpc')}") as client:
                return work(client)

        with trio.fail_after(DEADLINE):
            return await trio.to_thread.run_sync(in_thread)

    return run


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    raise AssertionError("the call should have failed")


async def http_call(port: int, method: str, target: str, body: bytes = b"") -> Reply:
    async with H1Client.connect(port) as client:
        return await client.request(method, target, [("content-type", "text/plain")], body)


# --- the Dapr gRPC API with the SDK ------------------------------------------------------------


@GRPC_INVOKE
async def test_sdk_invokes_another_app_through_both_sidecars(tmp_path: Path, sdk: Sdk) -> None:
    async with (
        backend(HttpApp()) as billing_port,
        sidecar("orders", None, tmp_path) as a,
        sidecar("billing", billing_port, tmp_path),
    ):
        reply = await sdk(
            a,
            lambda d: d.invoke_method(
                "billing",
                "charge/42",
                data=b"10.00",
                content_type="text/plain",
                http_verb="PUT",
                http_querystring=(("currency", "eur"),),
            ),
        )
        default_verb = await sdk(a, lambda d: d.invoke_method("billing", "ping", data=b"x"))
    assert reply.content_type == "application/json"
    seen = json.loads(reply.data)
    assert (seen["method"], seen["target"], seen["body"]) == (
        "PUT",
        "/charge/42?currency=eur",
        "10.00",
    )
    assert seen["headers"]["content-type"] == "text/plain"
    assert seen["headers"]["dapr-caller-app-id"] == "orders"
    assert seen["headers"]["dapr-callee-app-id"] == "billing"
    assert json.loads(default_verb.data)["method"] == "POST"


@GRPC_INVOKE
async def test_sdk_sees_invocation_errors_as_grpc_status(tmp_path: Path, sdk: Sdk) -> None:
    async with (
        backend(HttpApp()) as port,
        sidecar("orders", port, tmp_path) as a,
    ):
        unknown = await sdk(a, lambda d: failure(lambda: d.invoke_method("nobody", "x")))
        bad_id = await sdk(a, lambda d: failure(lambda: d.invoke_method("a.b.c", "x")))
        app_404 = await sdk(a, lambda d: failure(lambda: d.invoke_method("orders", "missing")))
    assert unknown[0] == grpc.StatusCode.INTERNAL
    assert unknown[1].startswith("failed to invoke, id: nobody, err: ")
    assert bad_id[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert app_404 == (grpc.StatusCode.NOT_FOUND, "Not Found")


def raw_metadata(port: int) -> GetMetadataResponse:
    """GetMetadata with the generated stub: the fields the SDK's wrapper does not show."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)  # type: ignore[no-untyped-call]
        reply: GetMetadataResponse = stub.GetMetadata(GetMetadataRequest(), timeout=DEADLINE)
        return reply


async def test_sdk_metadata_and_shutdown(tmp_path: Path, sdk: Sdk) -> None:
    async with backend(HttpApp()) as port, sidecar("orders", port, tmp_path) as a:

        def work(d: DaprClient) -> object:
            d.set_metadata("team", "payments")
            return d.get_metadata()

        metadata = await sdk(a, work)
        assert metadata.application_id == "orders"
        assert metadata.extended_metadata["team"] == "payments"
        assert "daprRuntimeVersion" in metadata.extended_metadata
        runtime = a.app.sidecar
        assert runtime is not None
        assert runtime.extended["team"] == "payments"
        raw = await trio.to_thread.run_sync(raw_metadata, a.port("dapr-grpc"))
        assert raw.id == "orders"
        assert raw.runtime_version == runtime.extended["daprRuntimeVersion"]
        props = raw.app_connection_properties
        assert (props.port, props.protocol, props.channel_address) == (port, "http", "127.0.0.1")
        await sdk(a, lambda d: d.shutdown())
        with trio.fail_after(DEADLINE):
            await a.stopped.wait()


@GRPC_INVOKE
async def test_api_token_guards_every_grpc_method(tmp_path: Path, sdk: Sdk) -> None:
    environ = {"DAPR_API_TOKEN": "s3cret"}
    async with (
        backend(HttpApp()) as port,
        sidecar("orders", port, tmp_path, environ=environ) as a,
    ):
        missing = await sdk(a, lambda d: failure(d.get_metadata))
        wrong = await sdk(a, lambda d: failure(d.get_metadata), token="nope")
        unbuilt = await sdk(a, lambda d: failure(lambda: d.get_state("store", "k")), token="nope")
        allowed = await sdk(a, lambda d: d.get_metadata(), token="s3cret")
        invoked = await sdk(a, lambda d: d.invoke_method("orders", "x", b"y"), token="s3cret")
        proxied = await trio.to_thread.run_sync(
            lambda: failure(lambda: echo(a.port("dapr-grpc"), "hi", [("dapr-app-id", "orders")]))
        )
    assert missing[0] == wrong[0] == unbuilt[0] == proxied[0] == grpc.StatusCode.UNAUTHENTICATED
    assert allowed.application_id == "orders"
    assert "dapr-api-token" not in json.loads(invoked.data)["headers"]


async def test_unbuilt_dapr_methods_are_unimplemented(tmp_path: Path, sdk: Sdk) -> None:
    async with sidecar("orders", None, tmp_path) as a:
        code, _ = await sdk(a, lambda d: failure(lambda: d.get_secret("vault", "k")))
    assert code == grpc.StatusCode.UNIMPLEMENTED  # secrets are not built yet


# --- gRPC apps (--app-protocol grpc) ----------------------------------------------------------


async def test_http_api_reaches_a_grpc_app_through_on_invoke(
    tmp_path: Path, grpc_app: GrpcApp
) -> None:
    async with (
        sidecar("orders", None, tmp_path) as a,
        sidecar("billing", grpc_app.port, tmp_path, "--app-protocol", "grpc"),
    ):
        api = a.port("dapr-http")
        reply = await http_call(api, "PUT", "/v1.0/invoke/billing/method/charge/42?c=eur", b"10")
        missing = await http_call(api, "GET", "/v1.0/invoke/billing/method/missing")
    assert (reply.status, reply.body) == (200, b"charged:10")
    assert reply.header(b"content-type") == b"text/plain"
    request, metadata = grpc_app.invoked[0]
    assert (request.method, request.data.value, request.content_type) == (
        "charge/42",
        b"10",
        "text/plain",
    )
    assert request.http_extension.verb == common_pb2.HTTPExtension.PUT
    assert request.http_extension.querystring == "c=eur"
    assert metadata["dapr-caller-app-id"] == "orders"
    assert metadata["dapr-callee-app-id"] == "billing"
    assert missing.status == 404
    assert json.loads(missing.body) == {"code": 5, "message": "no such item"}


@GRPC_INVOKE
async def test_sdk_reaches_a_grpc_app(tmp_path: Path, grpc_app: GrpcApp, sdk: Sdk) -> None:
    async with (
        sidecar("orders", None, tmp_path) as a,
        sidecar("billing", grpc_app.port, tmp_path, "--app-protocol", "grpc"),
    ):
        reply = await sdk(
            a, lambda d: d.invoke_method("billing", "charge", b"7", content_type="text/plain")
        )
        missing = await sdk(a, lambda d: failure(lambda: d.invoke_method("billing", "missing")))
    assert (reply.data, reply.content_type) == (b"charged:7", "text/plain")
    request, _ = grpc_app.invoked[0]
    assert request.http_extension.verb == common_pb2.HTTPExtension.POST
    assert missing == (grpc.StatusCode.NOT_FOUND, "no such item")  # the app's own status


# --- transparent gRPC proxying ----------------------------------------------------------------


def echo(port: int, text: str, metadata: list[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{ECHO}/Unary")
        reply, outcome = call.with_call(text.encode(), metadata=metadata, timeout=DEADLINE)
        return reply, dict(outcome.trailing_metadata() or ())


def chat(port: int, turns: int, metadata: list[tuple[str, str]]) -> list[bytes]:
    """Each message waits for the answer to the one before: the stream really interleaves."""
    answered = threading.Event()
    replies: list[bytes] = []

    def requests() -> Iterator[bytes]:
        for i in range(turns):
            answered.clear()
            yield f"ping-{i}".encode()
            if not answered.wait(DEADLINE):
                raise AssertionError(f"no reply to ping-{i} while the stream was open")

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(f"/{ECHO}/Chat")
        for reply in call(requests(), metadata=metadata, timeout=DEADLINE):
            replies.append(reply)
            answered.set()
    return replies


async def test_grpc_proxying_reaches_the_target_app_unary_and_bidi(
    tmp_path: Path, grpc_app: GrpcApp
) -> None:
    async with (
        sidecar("orders", None, tmp_path) as a,
        sidecar("billing", grpc_app.port, tmp_path, "--app-protocol", "grpc") as b,
    ):
        port = a.port("dapr-grpc")
        reply, trailers = await trio.to_thread.run_sync(
            echo, port, "hello", [("dapr-app-id", "billing"), ("dapr-caller-app-id", "forged")]
        )
        by_callee = await trio.to_thread.run_sync(
            echo, port, "again", [("dapr-callee-app-id", "billing"), ("dapr-app-id", "nobody")]
        )
        local, _ = await trio.to_thread.run_sync(
            echo, b.port("dapr-grpc"), "self", [("dapr-app-id", "billing")]
        )
        replies = await trio.to_thread.run_sync(chat, port, 5, [("dapr-app-id", "billing")])
    assert reply == b"echo:hello from orders"  # the caller comes from mTLS, not the metadata
    assert trailers["x-echo"] == "done"
    assert by_callee[0] == b"echo:again from orders"
    assert local == b"echo:self from billing"
    assert replies == [f"pong:ping-{i}".encode() for i in range(5)]


async def test_grpc_proxying_errors(tmp_path: Path) -> None:
    async with sidecar("orders", None, tmp_path) as a:
        port = a.port("dapr-grpc")
        no_target = await trio.to_thread.run_sync(lambda: failure(lambda: echo(port, "x", [])))
        unknown = await trio.to_thread.run_sync(
            lambda: failure(lambda: echo(port, "x", [("dapr-app-id", "nobody")]))
        )
    assert no_target == (
        grpc.StatusCode.UNKNOWN,
        "failed to proxy request: required metadata dapr-callee-app-id or dapr-app-id not found",
    )
    assert unknown[0] == grpc.StatusCode.INTERNAL
    assert unknown[1].startswith("failed to invoke, id: nobody, err: ")
