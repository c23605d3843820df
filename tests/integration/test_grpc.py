"""gRPC through meshwire with the official grpcio client and server: unary and bidi streaming."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
import trio

from tests.integration.harness import meshwire, one_route_config

SERVICE = "meshwire.test.Echo"


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-echo-trailer", "unary"),))
    return b"echo:" + request


def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused on purpose")
    raise AssertionError("abort raises")


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for message in requests:
        yield b"pong:" + message


@pytest.fixture
def grpc_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail),
            "Chat": grpc.stream_stream_rpc_method_handler(_bidi),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait()


def _call_unary(port: int) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        reply, outcome = call.with_call(b"hello", timeout=10)
        return reply, tuple(outcome.trailing_metadata() or ())


def _call_fail(port: int) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(f"/{SERVICE}/Fail")(b"x", timeout=10)
        except grpc.RpcError as err:
            return err.code(), err.details()
    raise AssertionError("the call should have failed")


def _chat(port: int, turns: int) -> list[bytes]:
    """Send one message, wait for its answer before sending the next: proves true interleaving."""
    answered = threading.Event()
    replies: list[bytes] = []

    def requests() -> Iterator[bytes]:
        for i in range(turns):
            answered.clear()
            yield f"ping-{i}".encode()
            if not answered.wait(10):
                raise AssertionError(
                    f"no reply to ping-{i} while the request stream was still open"
                )

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for reply in channel.stream_stream(f"/{SERVICE}/Chat")(requests(), timeout=20):
            replies.append(reply)
            answered.set()
    return replies


async def test_grpc_unary_passes_through_with_trailers(grpc_server: int) -> None:
    config = one_route_config(0, grpc_server, upstream_protocol="h2c", timeout=0)
    async with meshwire(config) as mw:
        port = mw.port()
        reply, trailers = await trio.to_thread.run_sync(_call_unary, port)
        code, details = await trio.to_thread.run_sync(_call_fail, port)
    assert reply == b"echo:hello"
    assert ("x-echo-trailer", "unary") in trailers
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == "refused on purpose"


async def test_grpc_bidirectional_stream_interleaves(grpc_server: int) -> None:
    config = one_route_config(0, grpc_server, upstream_protocol="h2c", timeout=0)
    async with meshwire(config) as mw:
        replies = await trio.to_thread.run_sync(_chat, mw.port(), 5)
    assert replies == [f"pong:ping-{i}".encode() for i in range(5)]
