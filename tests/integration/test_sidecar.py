"""Two sidecars and their apps on loopback: Dapr's HTTP invocation API, headers, errors, auth."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, backend
from tests.integration.sidecars import generated, sidecar, sidecar_args


class App:
    """An app that answers with what it received (method, path, body, Dapr headers)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        body = b""
        while chunk := await request.body.read():
            body += chunk
        reply = {
            "app": self.name,
            "method": request.method.decode(),
            "target": request.target.decode(),
            "body": body.decode(),
            "headers": {k.decode(): v.decode() for k, v in request.headers},
        }
        data = json.dumps(reply).encode()
        return Response(
            201,
            [(b"content-type", b"application/json"), (b"x-app", self.name.encode())],
            BytesBody(data),
        )


async def call(port: int, method: str, target: str, *, headers=None, body: bytes = b""):  # type: ignore[no-untyped-def]
    async with H1Client.connect(port) as client:
        return await client.request(method, target, headers or [], body)


async def test_invoke_another_app_through_both_sidecars(tmp_path: Path) -> None:
    orders, billing = App("orders"), App("billing")
    async with (
        backend(orders) as orders_port,
        backend(billing) as billing_port,
        sidecar("orders", orders_port, tmp_path) as a,
        sidecar("billing", billing_port, tmp_path),
    ):
        reply = await call(
            a.port("dapr-http"),
            "POST",
            "/v1.0/invoke/billing/method/charge/42?currency=eur",
            headers=[
                ("content-type", "text/plain"),
                ("dapr-caller-app-id", "forged"),
                ("x-custom", "kept"),
            ],
            body=b"10.00",
        )
    assert reply.status == 201, reply.body
    assert reply.header(b"x-app") == b"billing"
    seen = json.loads(reply.body)
    assert (seen["method"], seen["target"], seen["body"]) == (
        "POST",
        "/charge/42?currency=eur",
        "10.00",
    )
    headers = seen["headers"]
    assert headers["dapr-caller-app-id"] == "orders"  # from the mTLS identity, not the caller
    assert headers["dapr-caller-namespace"] == "default"
    assert headers["dapr-callee-app-id"] == "billing"
    assert headers["x-custom"] == "kept"
    assert "dapr-callee-namespace" not in headers


async def test_the_dapr_app_id_header_form_and_self_invocation(tmp_path: Path) -> None:
    orders = App("orders")
    async with backend(orders) as port, sidecar("orders", port, tmp_path) as a:
        by_header = await call(
            a.port("dapr-http"), "GET", "/api/v1/items?page=2", headers=[("dapr-app-id", "orders")]
        )
        by_path = await call(a.port("dapr-http"), "DELETE", "/v1.0/invoke/orders/method/items/7")
    assert by_header.status == 201
    seen = json.loads(by_header.body)
    assert seen["target"] == "/api/v1/items?page=2"
    assert "dapr-app-id" not in seen["headers"]
    assert seen["headers"]["dapr-caller-app-id"] == "orders"
    assert json.loads(by_path.body)["method"] == "DELETE"


async def test_invocation_errors_are_daprs(tmp_path: Path) -> None:
    async with sidecar("lonely", None, tmp_path) as a:
        port = a.port("dapr-http")
        unknown = await call(port, "GET", "/v1.0/invoke/nobody/method/x")
        no_id = await call(port, "GET", "/some/path")
        bad_id = await call(port, "GET", "/v1.0/invoke/a.b.c/method/x")
        no_app = await call(port, "GET", "/v1.0/invoke/lonely/method/x")
    assert unknown.status == 500
    body = json.loads(unknown.body)
    assert body["errorCode"] == "ERR_DIRECT_INVOKE"
    assert body["message"].startswith("failed to invoke, id: nobody, err: ")
    assert no_id.status == 404
    assert json.loads(no_id.body) == {
        "errorCode": "ERR_DIRECT_INVOKE",
        "message": "failed getting app id either from the URL path or the header dapr-app-id",
    }
    assert bad_id.status == 400
    assert json.loads(no_app.body)["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_health_metadata_and_shutdown(tmp_path: Path) -> None:
    orders = App("orders")
    async with backend(orders) as port, sidecar("orders", port, tmp_path) as a:
        api = a.port("dapr-http")
        runtime = a.app.sidecar
        assert runtime is not None
        with trio.fail_after(10):
            await runtime.app_ready.wait()
        assert (await call(api, "GET", "/v1.0/healthz/outbound")).status == 204
        assert (await call(api, "GET", "/v1.0/healthz")).status == 204
        wrong = await call(api, "GET", "/v1.0/healthz?appid=other")
        assert json.loads(wrong.body)["errorCode"] == "ERR_HEALTH_APPID_NOT_MATCH"
        assert (await call(api, "PUT", "/v1.0/metadata/team", body=b"payments")).status == 204
        metadata = json.loads((await call(api, "GET", "/v1.0/metadata")).body)
        assert metadata["id"] == "orders"
        assert metadata["extended"]["team"] == "payments"
        assert metadata["appConnectionProperties"]["port"] == port
        assert (await call(api, "POST", "/v1.0/shutdown")).status == 204
        with trio.fail_after(10):
            await a.stopped.wait()


async def test_health_waits_for_the_app_but_outbound_does_not(tmp_path: Path) -> None:
    with trio.socket.socket() as placeholder:  # a port nobody listens on yet
        await placeholder.bind(("127.0.0.1", 0))
        app_port = placeholder.getsockname()[1]
    async with sidecar("late", app_port, tmp_path) as a:
        api = a.port("dapr-http")
        assert (await call(api, "GET", "/v1.0/healthz/outbound")).status == 204
        not_ready = await call(api, "GET", "/v1.0/healthz")
        assert not_ready.status == 500
        assert json.loads(not_ready.body)["errorCode"] == "ERR_HEALTH_NOT_READY"


async def test_api_token_is_required_and_never_forwarded(tmp_path: Path) -> None:
    orders = App("orders")
    environ = {"DAPR_API_TOKEN": "s3cret", "APP_API_TOKEN": "for-the-app"}
    async with (
        backend(orders) as port,
        sidecar("orders", port, tmp_path, environ=environ) as a,
    ):
        api = a.port("dapr-http")
        refused = await call(api, "GET", "/v1.0/invoke/orders/method/x")
        wrong = await call(api, "GET", "/v1.0/metadata", headers=[("dapr-api-token", "nope")])
        health = await call(api, "GET", "/v1.0/healthz/outbound")
        allowed = await call(
            api, "GET", "/v1.0/invoke/orders/method/x", headers=[("dapr-api-token", "s3cret")]
        )
    assert (refused.status, refused.body) == (401, b"invalid api token")
    assert wrong.status == 401
    assert health.status == 204
    assert allowed.status == 201
    assert json.loads(allowed.body)["headers"]["dapr-api-token"] == "for-the-app"


async def test_a_plaintext_peer_is_refused_by_the_internal_port(tmp_path: Path) -> None:
    async with sidecar("orders", None, tmp_path) as a:
        stream = await trio.open_tcp_stream("127.0.0.1", a.port("dapr-internal"))
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            with trio.fail_after(10):
                data = b""
                while chunk := await stream.receive_some(4096):
                    data += chunk
    assert b"HTTP/1.1" not in data  # the TLS server never answers plaintext


def test_generated_config_names_the_app_and_its_ports(tmp_path: Path) -> None:
    config = generated(sidecar_args("orders", 8080, tmp_path, "--dapr-internal-grpc-port", "0"))
    assert config.sidecar is not None
    assert config.sidecar.app_id == "orders"
    assert [c.endpoints for c in config.clusters] == [["127.0.0.1:8080"]]
    names = [listener.name for listener in config.listeners]
    assert names == ["dapr-http", "dapr-internal"]
    assert config.listeners[1].sidecar_mtls
