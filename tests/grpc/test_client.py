"""unary_call through meshwire's upstream h2c client, against grpcio and meshwire's own servers."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager

import grpc
import pytest
import trio
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status

from config.schema import Cluster
from proxy.grpc.client import unary_call
from proxy.grpc.context import RequestContext
from proxy.grpc.service import GrpcServiceTerminal
from proxy.grpc.status import GrpcError, StatusCode
from proxy.http.errors import UpstreamConnectFailure
from proxy.http.model import EmptyBody, Request, Response, StreamInfo
from proxy.stats import Stats
from proxy.upstream.cluster import UpstreamCluster
from proxy.upstream.manager import ClusterManager
from tests.grpc.messages import ON_INVOKE, InvokeRequest, InvokeResponse, path_of
from tests.integration.harness import backend

ON_INVOKE_PATH = path_of(ON_INVOKE)
DENIED_MESSAGE = "denied \u2014 100%"
DENIED = ErrorInfo(reason="DAPR_APP_DENIED", domain="example.test", metadata={"who": "me"})


class App:
    """A grpcio AppCallback-style server whose OnInvoke behaves by the method name it is given."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.metadata: list[tuple[str, str | bytes]] = []

    def on_invoke(self, request: Message, context: grpc.ServicerContext) -> Message:
        method = request.method  # type: ignore[attr-defined]
        self.metadata = list(context.invocation_metadata())
        if method == "deny":
            status = Status(
                code=grpc.StatusCode.PERMISSION_DENIED.value[0], message="denied \u2014 100%"
            )
            packed = any_pb2.Any()
            packed.Pack(DENIED)
            status.details.append(packed)
            context.set_trailing_metadata(
                (("grpc-status-details-bin", status.SerializeToString()), ("x-why", "policy"))
            )
            context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED_MESSAGE)
        if method == "slow":
            self.release.wait(30)
        context.send_initial_metadata((("x-initial", "1"),))
        context.set_trailing_metadata((("x-served-by", "grpcio"), ("x-blob-bin", b"\x00\x07")))
        return InvokeResponse(data=any_pb2.Any(type_url="echo", value=method.encode()))


@pytest.fixture
def app() -> Iterator[tuple[App, int]]:
    behaviour = App()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        ON_INVOKE.containing_service.full_name,
        {
            ON_INVOKE.name: grpc.unary_unary_rpc_method_handler(
                behaviour.on_invoke,
                request_deserializer=InvokeRequest.FromString,
                response_serializer=InvokeResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield behaviour, port
    finally:
        behaviour.release.set()
        server.stop(grace=None).wait()


@asynccontextmanager
async def h2c_cluster(port: int) -> AsyncIterator[UpstreamCluster]:
    config = Cluster(name="app", endpoints=[f"127.0.0.1:{port}"], protocol="h2c")
    async with ClusterManager([config], Stats()) as manager:
        cluster = manager.get("app")
        assert cluster is not None
        yield cluster


async def test_success_with_metadata_through_the_h2c_pool(app: tuple[App, int]) -> None:
    behaviour, port = app
    info = StreamInfo()
    async with h2c_cluster(port) as cluster:
        with trio.fail_after(10):
            reply, trailing = await unary_call(
                cluster.send,
                ON_INVOKE_PATH,
                InvokeRequest(method="hello"),
                InvokeResponse,
                metadata=[(b"dapr-caller-app-id", b"orders"), (b"x-trace-bin", b"\x01\x02")],
                timeout=10,
                info=info,
            )
    assert isinstance(reply, InvokeResponse)
    assert reply.data.value == b"hello"  # type: ignore[attr-defined]
    assert (b"x-served-by", b"grpcio") in trailing
    assert (b"x-blob-bin", b"\x00\x07") in trailing
    assert all(not name.startswith(b"grpc-") for name, _ in trailing)
    assert ("dapr-caller-app-id", "orders") in behaviour.metadata
    assert ("x-trace-bin", b"\x01\x02") in behaviour.metadata
    assert info.upstream_cluster == "app"


async def test_error_status_with_details(app: tuple[App, int]) -> None:
    _, port = app
    async with h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(
                cluster.send, ON_INVOKE_PATH, InvokeRequest(method="deny"), InvokeResponse
            )
    err = caught.value
    assert err.code is StatusCode.PERMISSION_DENIED
    assert err.message == DENIED_MESSAGE
    assert err.details == (DENIED,)
    assert (b"x-why", b"policy") in err.metadata


async def test_deadline_exceeded(app: tuple[App, int]) -> None:
    _, port = app
    async with h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(
                cluster.send,
                ON_INVOKE_PATH,
                InvokeRequest(method="slow"),
                InvokeResponse,
                timeout=0.2,
            )
    assert caught.value.code is StatusCode.DEADLINE_EXCEEDED


async def test_unknown_method_on_grpcio_is_unimplemented(app: tuple[App, int]) -> None:
    _, port = app
    async with h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(cluster.send, "/no.Such/Method", InvokeRequest(), InvokeResponse)
    assert caught.value.code is StatusCode.UNIMPLEMENTED


# --- against meshwire's own server: exact wire shapes --------------------------------------------


async def trailers_only(request: Request) -> Response:
    await request.body.aclose()
    headers = [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"9"),
        (b"grpc-message", b"not%20yet"),
        (b"x-hint", b"retry-later"),
    ]
    return Response(200, headers, EmptyBody())


async def http_error(request: Request) -> Response:
    await request.body.aclose()
    return Response.text(503, "overloaded")


async def no_trailers(request: Request) -> Response:
    await request.body.aclose()
    return Response(200, [(b"content-type", b"application/grpc")], EmptyBody())


async def test_trailers_only_response() -> None:
    async with backend(trailers_only, frozenset({"h2c"})) as port, h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(cluster.send, ON_INVOKE_PATH, InvokeRequest(), InvokeResponse)
    assert caught.value.code is StatusCode.FAILED_PRECONDITION
    assert caught.value.message == "not yet"
    assert caught.value.metadata == [(b"x-hint", b"retry-later")]


async def test_non_200_maps_by_the_spec_table() -> None:
    async with backend(http_error, frozenset({"h2c"})) as port, h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(cluster.send, ON_INVOKE_PATH, InvokeRequest(), InvokeResponse)
    assert caught.value.code is StatusCode.UNAVAILABLE


async def test_missing_status_is_internal() -> None:
    async with backend(no_trailers, frozenset({"h2c"})) as port, h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(cluster.send, ON_INVOKE_PATH, InvokeRequest(), InvokeResponse)
    assert caught.value.code is StatusCode.INTERNAL


async def test_unreachable_upstream_is_unavailable() -> None:
    async with backend(http_error) as port:
        pass  # the port is free again once the listener closed
    async with h2c_cluster(port) as cluster:
        with trio.fail_after(10), pytest.raises(GrpcError) as caught:
            await unary_call(cluster.send, ON_INVOKE_PATH, InvokeRequest(), InvokeResponse)
    assert caught.value.code is StatusCode.UNAVAILABLE


async def test_round_trip_with_the_terminal_in_process() -> None:
    terminal = GrpcServiceTerminal()

    async def on_invoke(request: Message, ctx: RequestContext) -> Message:
        if request.method == "deny":  # type: ignore[attr-defined]
            raise GrpcError(StatusCode.PERMISSION_DENIED, "no", [DENIED])
        ctx.add_trailer(b"x-echo-bin", ctx.get(b"x-in-bin") or b"")
        return InvokeResponse(data=any_pb2.Any(value=b"ok"))

    terminal.add_method(ON_INVOKE, on_invoke)
    reply, trailing = await unary_call(
        terminal,
        ON_INVOKE_PATH,
        InvokeRequest(method="m"),
        InvokeResponse,
        metadata=[(b"x-in-bin", b"\xff")],
    )
    assert reply.data.value == b"ok"  # type: ignore[attr-defined]
    assert trailing == [(b"x-echo-bin", b"\xff")]
    with pytest.raises(GrpcError) as caught:
        await unary_call(terminal, ON_INVOKE_PATH, InvokeRequest(method="deny"), InvokeResponse)
    assert caught.value.details == (DENIED,)


async def test_proxy_errors_in_a_handler_become_status_and_keep_their_flag() -> None:
    terminal = GrpcServiceTerminal()

    async def on_invoke(request: Message, ctx: RequestContext) -> Message:
        raise UpstreamConnectFailure("app not reachable")

    terminal.add_method(ON_INVOKE, on_invoke)
    info = StreamInfo()
    with pytest.raises(GrpcError) as caught:
        await unary_call(terminal, ON_INVOKE_PATH, InvokeRequest(), InvokeResponse, info=info)
    assert caught.value.code is StatusCode.UNAVAILABLE
    assert caught.value.message == "app not reachable"
    assert info.response_flags == ["UF"]
