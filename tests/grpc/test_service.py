"""GrpcServiceTerminal served by meshwire's own HTTP/2 downstream, driven by the grpcio client."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
import trio
from google.protobuf.message import Message
from google.rpc.error_details_pb2 import ErrorInfo, ResourceInfo
from google.rpc.status_pb2 import Status

from proxy.grpc.context import RequestContext
from proxy.grpc.framing import encode_message
from proxy.grpc.service import GrpcServiceTerminal
from proxy.grpc.status import GrpcError, StatusCode
from tests.grpc.messages import (
    GET_STATE,
    GetStateRequest,
    GetStateResponse,
    path_of,
)
from tests.integration.harness import H2Client, backend

GET_STATE_PATH = path_of(GET_STATE)
STREAM_PATH = "/meshwire.test.States/Watch"
ECHO_PATH = "/meshwire.test.States/Echo"
MISSING_MESSAGE = "key missing: 100% gone \u2014 sorry"
NOT_FOUND_DETAILS = [
    ErrorInfo(reason="DAPR_STATE_NOT_FOUND", domain="dapr.io", metadata={"key": "missing"}),
    ResourceInfo(resource_type="state", resource_name="statestore"),
]


@dataclass
class Seen:
    """What the handlers observed, and the events tests wait on."""

    contexts: list[RequestContext] = field(default_factory=list)
    release: trio.Event = field(default_factory=trio.Event)
    cancelled: trio.Event = field(default_factory=trio.Event)


def build_terminal(seen: Seen) -> GrpcServiceTerminal:
    terminal = GrpcServiceTerminal(max_receive_message_size=64 * 1024)

    async def get_state(request: Message, ctx: RequestContext) -> Message:
        assert isinstance(request, GetStateRequest)
        seen.contexts.append(ctx)
        key = request.key  # type: ignore[attr-defined]
        if key == "missing":
            raise GrpcError(StatusCode.NOT_FOUND, MISSING_MESSAGE, NOT_FOUND_DETAILS)
        if key == "crash":
            raise RuntimeError("secret internals")
        if key == "slow":
            try:
                await seen.release.wait()
            finally:
                seen.cancelled.set()
        ctx.add_header(b"x-initial", b"yes")
        ctx.add_trailer(b"x-trailer", b"done")
        ctx.add_trailer(b"x-raw-bin", b"\x00\xfe")
        tenant = (ctx.get(b"x-tenant") or b"").decode()
        return GetStateResponse(data=f"{tenant}:{key}".encode(), etag="7")

    async def watch(request: Message, ctx: RequestContext) -> AsyncIterator[Message]:
        key = request.key  # type: ignore[attr-defined]
        for i in range(3):
            yield GetStateResponse(data=f"{key}-{i}".encode())
            if key == "break":
                raise GrpcError(StatusCode.ABORTED, "stream broken")
        ctx.add_trailer(b"x-count", b"3")

    async def echo(requests: AsyncIterator[Message], ctx: RequestContext) -> AsyncIterator[Message]:
        async for request in requests:  # one reply per request, as each arrives
            key = request.key  # type: ignore[attr-defined]
            if key == "stop":
                raise GrpcError(StatusCode.CANCELLED, "asked to stop")
            yield GetStateResponse(data=f"echo {key}".encode())

    terminal.add_method(GET_STATE, get_state)
    terminal.add_server_streaming(STREAM_PATH, GetStateRequest, watch)
    terminal.add_bidi_streaming(ECHO_PATH, GetStateRequest, echo)
    return terminal


def call(port: int, key: str, path: str = GET_STATE_PATH, **kw: object) -> grpc.Call:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary(
            path,
            request_serializer=GetStateRequest.SerializeToString,
            response_deserializer=GetStateResponse.FromString,
        )
        kw.setdefault("timeout", 10)
        try:
            reply, outcome = method.with_call(GetStateRequest(store_name="s", key=key), **kw)
        except grpc.RpcError as err:
            return err  # type: ignore[return-value]
        outcome.reply = reply  # type: ignore[attr-defined]
        return outcome


def stream(port: int, key: str) -> tuple[list[bytes], grpc.StatusCode, str, tuple[object, ...]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_stream(
            STREAM_PATH,
            request_serializer=GetStateRequest.SerializeToString,
            response_deserializer=GetStateResponse.FromString,
        )
        responses = method(GetStateRequest(key=key), timeout=10)
        received: list[bytes] = []
        try:
            for reply in responses:
                received.append(reply.data)
        except grpc.RpcError:
            pass
        return received, responses.code(), responses.details(), tuple(responses.trailing_metadata())


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, Seen]]:
    seen = Seen()
    async with backend(build_terminal(seen), protocols=frozenset({"h2c"})) as port:
        yield port, seen
        seen.release.set()


async def test_unary_call_with_metadata(served: tuple[int, Seen]) -> None:
    port, seen = served
    metadata = (("x-tenant", "acme"), ("x-token-bin", b"\x00\x01\xff"))
    outcome = await trio.to_thread.run_sync(lambda: call(port, "k1", metadata=metadata))
    assert outcome.code() is grpc.StatusCode.OK
    assert outcome.reply.data == b"acme:k1"  # type: ignore[attr-defined]
    assert outcome.reply.etag == "7"  # type: ignore[attr-defined]
    assert ("x-initial", "yes") in outcome.initial_metadata()
    trailing = outcome.trailing_metadata()
    assert ("x-trailer", "done") in trailing
    assert ("x-raw-bin", b"\x00\xfe") in trailing
    [ctx] = seen.contexts
    assert ctx.get(b"x-token-bin") == b"\x00\x01\xff"
    assert ctx.method == GET_STATE_PATH
    assert ctx.request.http_version == "2"
    assert ctx.info.downstream_addr == "backend"
    assert ctx.deadline < float("inf")  # grpcio sent grpc-timeout
    assert all(name not in (b"content-type", b"te", b"grpc-timeout") for name, _ in ctx.metadata)


async def test_error_with_details_decoded_from_the_trailers(served: tuple[int, Seen]) -> None:
    port, _ = served
    err = await trio.to_thread.run_sync(lambda: call(port, "missing"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert err.details() == MISSING_MESSAGE
    raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
    status = Status.FromString(raw)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    info, resource = ErrorInfo(), ResourceInfo()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(resource)
    assert [info, resource] == NOT_FOUND_DETAILS


async def test_unknown_method_is_unimplemented(served: tuple[int, Seen]) -> None:
    port, _ = served
    path = "/dapr.proto.runtime.v1.Dapr/Nope"
    err = await trio.to_thread.run_sync(lambda: call(port, "k", path=path))
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "Nope" in err.details()


async def test_unexpected_exception_is_unknown_with_a_generic_message(
    served: tuple[int, Seen], caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = served
    err = await trio.to_thread.run_sync(lambda: call(port, "crash"))
    assert err.code() is grpc.StatusCode.UNKNOWN
    assert "secret" not in err.details()
    assert any("secret internals" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_client_deadline_cancels_the_handler(served: tuple[int, Seen]) -> None:
    port, seen = served
    err = await trio.to_thread.run_sync(lambda: call(port, "slow", timeout=0.3))
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    with trio.fail_after(10):
        await seen.cancelled.wait()
    assert not seen.release.is_set()


async def test_gzip_compressed_request(served: tuple[int, Seen]) -> None:
    port, _ = served
    outcome = await trio.to_thread.run_sync(
        lambda: call(port, "zipped" * 100, compression=grpc.Compression.Gzip)
    )
    assert outcome.code() is grpc.StatusCode.OK
    assert outcome.reply.data == b":" + b"zipped" * 100  # type: ignore[attr-defined]


async def test_request_over_the_size_limit_is_resource_exhausted(served: tuple[int, Seen]) -> None:
    port, _ = served
    err = await trio.to_thread.run_sync(lambda: call(port, "k" * (100 * 1024)))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_server_streaming_sends_every_message_then_ok(served: tuple[int, Seen]) -> None:
    port, _ = served
    received, code, _, trailing = await trio.to_thread.run_sync(stream, port, "w")
    assert received == [b"w-0", b"w-1", b"w-2"]
    assert code is grpc.StatusCode.OK
    assert ("x-count", "3") in trailing


async def test_server_streaming_error_after_a_message(served: tuple[int, Seen]) -> None:
    port, _ = served
    received, code, details, _ = await trio.to_thread.run_sync(stream, port, "break")
    assert received == [b"break-0"]
    assert code is grpc.StatusCode.ABORTED
    assert details == "stream broken"


# --- raw HTTP/2: what the bytes on the wire look like --------------------------------------------


def grpc_headers(**extra: str) -> list[tuple[str, str]]:
    return [("content-type", "application/grpc"), ("te", "trailers"), *extra.items()]


async def test_server_deadline_answers_trailers_only(served: tuple[int, Seen]) -> None:
    port, seen = served
    body = encode_message(GetStateRequest(key="slow").SerializeToString())
    headers = [*grpc_headers(), ("grpc-timeout", "50m")]
    async with H2Client.connect(port) as client:
        with trio.fail_after(10):
            reply = await client.request("POST", GET_STATE_PATH, headers, body)
    assert reply.status == 200
    assert reply.header(b"grpc-status") == b"4"
    assert reply.header(b"content-type") == b"application/grpc"
    assert reply.body == b""
    assert reply.trailers == []
    assert seen.cancelled.is_set()


async def test_success_sends_message_then_trailers(served: tuple[int, Seen]) -> None:
    port, _ = served
    body = encode_message(GetStateRequest(key="k").SerializeToString())
    async with H2Client.connect(port) as client:
        with trio.fail_after(10):
            reply = await client.request("POST", GET_STATE_PATH, grpc_headers(), body)
    assert reply.header(b"grpc-status") is None
    assert reply.body == encode_message(GetStateResponse(data=b":k", etag="7").SerializeToString())
    assert dict(reply.trailers)[b"grpc-status"] == b"0"
    assert dict(reply.trailers)[b"x-raw-bin"] == base64.b64encode(b"\x00\xfe").rstrip(b"=")


async def test_not_grpc_content_type_is_415(served: tuple[int, Seen]) -> None:
    port, _ = served
    async with H2Client.connect(port) as client:
        with trio.fail_after(10):
            reply = await client.request(
                "POST", GET_STATE_PATH, [("content-type", "application/json")], b"{}"
            )
    assert reply.status == 415


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", b"12"),  # no message: request cardinality violation
        (encode_message(b"") * 2, b"12"),  # two messages on a unary method
        (encode_message(b"\xff\xff"), b"13"),  # not a GetStateRequest
        (encode_message(b"abc")[:-1], b"13"),  # stream ends inside the message
    ],
)
async def test_malformed_requests(served: tuple[int, Seen], body: bytes, code: bytes) -> None:
    port, _ = served
    async with H2Client.connect(port) as client:
        with trio.fail_after(10):
            reply = await client.request("POST", GET_STATE_PATH, grpc_headers(), body)
    assert reply.status == 200
    assert reply.header(b"grpc-status") == code


async def test_unsupported_grpc_encoding_is_unimplemented(served: tuple[int, Seen]) -> None:
    port, _ = served
    body = encode_message(GetStateRequest(key="k").SerializeToString())
    headers = [*grpc_headers(), ("grpc-encoding", "snappy")]
    async with H2Client.connect(port) as client:
        with trio.fail_after(10):
            reply = await client.request("POST", GET_STATE_PATH, headers, body)
    assert reply.header(b"grpc-status") == b"12"
    assert reply.header(b"grpc-accept-encoding") == b"identity,gzip"


def echo(port: int, keys: list[str]) -> tuple[list[bytes], grpc.StatusCode]:
    """A bidirectional call: the next request goes only once the previous reply came back."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.stream_stream(
            ECHO_PATH,
            request_serializer=GetStateRequest.SerializeToString,
            response_deserializer=GetStateResponse.FromString,
        )
        answered = threading.Semaphore(0)

        def requests() -> Iterator[GetStateRequest]:
            for key in keys:
                yield GetStateRequest(key=key)
                answered.acquire(timeout=10)

        received: list[bytes] = []
        call = method(requests(), timeout=10)
        try:
            for reply in call:
                received.append(reply.data)
                answered.release()
        except grpc.RpcError:
            pass
        return received, call.code()


async def test_bidirectional_streaming_answers_each_request_as_it_arrives(
    served: tuple[int, Seen],
) -> None:
    port, _ = served
    received, code = await trio.to_thread.run_sync(echo, port, ["a", "b", "c"])
    assert (received, code) == ([b"echo a", b"echo b", b"echo c"], grpc.StatusCode.OK)
    received, code = await trio.to_thread.run_sync(echo, port, ["a", "stop", "never"])
    assert (received, code) == ([b"echo a"], grpc.StatusCode.CANCELLED)


def test_registration_rules() -> None:
    terminal = GrpcServiceTerminal()
    terminal.add_method(GET_STATE, _never)
    assert terminal.paths == {GET_STATE_PATH}
    with pytest.raises(ValueError, match="already registered"):
        terminal.add_unary(GET_STATE_PATH, GetStateRequest, _never)
    with pytest.raises(ValueError, match=r"/package\.Service/Method"):
        terminal.add_unary("GetState", GetStateRequest, _never)


async def _never(request: Message, ctx: RequestContext) -> Message:
    raise AssertionError("not called")
