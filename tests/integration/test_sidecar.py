"""Two sidecars and their apps on loopback: Dapr's HTTP invocation API, headers, errors, auth."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import trio
import trio.testing

from proxy.http.model import BytesBody, Request, Response
from tests.dashboards.test_dashboards import tool
from tests.integration.harness import H1Client, H2Client, Reply, backend
from tests.integration.sidecars import generated, sidecar, sidecar_args


def no_subscriptions(request: Request) -> Response | None:
    """The sidecar's start-up GET /dapr/subscribe, answered as an app without subscriptions
    answers it (404), so the tests' apps see only the calls under test."""
    if request.method == b"GET" and request.path == b"/dapr/subscribe":
        return Response.text(404, "no subscriptions")
    return None


class App:
    """An app that answers with what it received (method, path, body, Dapr headers)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        if (discovery := no_subscriptions(request)) is not None:
            return discovery
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
    # daprd's forwarded headers for a call between sidecars: the calling host, once each.
    host = socket.gethostname()
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == host
    assert headers["forwarded"] == f"for=127.0.0.1;by=127.0.0.1;host={host}"


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


def test_generated_config_names_the_app_and_its_ports(tmp_path: Path) -> None:
    config = generated(sidecar_args("orders", 8080, tmp_path, "--dapr-internal-grpc-port", "0"))
    assert config.sidecar is not None
    assert config.sidecar.app_id == "orders"
    assert [c.endpoints for c in config.clusters] == [["127.0.0.1:8080"]]
    names = [listener.name for listener in config.listeners]
    assert names == ["dapr-http", "dapr-internal", "dapr-grpc"]
    assert config.listeners[1].sidecar_mtls


async def test_daprs_metric_names_are_on_the_metrics_port(tmp_path: Path) -> None:
    orders, billing = App("orders"), App("billing")
    async with (
        backend(orders) as orders_port,
        backend(billing) as billing_port,
        sidecar("orders", orders_port, tmp_path, "--metrics-port", "0") as a,
        sidecar("billing", billing_port, tmp_path, "--metrics-port", "0") as b,
    ):
        for _ in range(3):
            reply = await call(
                a.port("dapr-http"), "POST", "/v1.0/invoke/billing/method/x", body=b"hi"
            )
            assert reply.status == 201
        caller = (await call(a.port("admin"), "GET", "/metrics")).body.decode()
        callee = (await call(b.port("admin"), "GET", "/metrics")).body.decode()
        ours = (await call(a.port("admin"), "GET", "/stats/prometheus")).body.decode()
    route = 'path="/v1.0/invoke/*/method/*"'
    assert f'dapr_http_server_request_count{{app_id="orders",method="POST",{route}}} 3' in caller
    assert (
        f'dapr_http_server_latency_count{{app_id="orders",method="POST",{route},status="201"}} 3'
        in caller
    )
    assert (
        'dapr_runtime_service_invocation_req_sent_total{app_id="orders",dst_app_id="billing",'
        'type="unary"} 3' in caller
    )
    assert (
        'dapr_runtime_service_invocation_req_recv_total{app_id="billing",src_app_id="orders",'
        'type="unary"} 3' in callee
    )
    assert (
        'dapr_http_client_completed_count{app_id="billing",method="POST",path="/*",status="201"} 3'
        in callee
    )
    assert 'dapr_http_client_roundtrip_latency_bucket{app_id="billing"' in callee
    # Every series Dapr's sidecar dashboard (grafana-sidecar-dashboard.json) queries for HTTP.
    for family in (
        "dapr_http_server_latency_bucket",
        "dapr_http_server_response_count",
        "dapr_http_client_roundtrip_latency_bucket",
        "dapr_http_client_completed_count",
    ):
        assert f"\n{family}{{" in caller + callee, family
    assert "dapr_" not in ours
    promtool = tool("promtool")
    for text in (ours, caller, callee):
        result = await trio.run_process(
            [promtool, "check", "metrics"], stdin=text.encode(), capture_stdout=True,
            capture_stderr=True, check=False,
        )  # fmt: skip
        problems = (result.stdout + result.stderr).decode().splitlines()
        # Dapr's own spelling is the one lint exception (`_count` counters, no `_total`, `_ms`).
        assert all(p.startswith("dapr_") for p in problems), problems


RESILIENCY = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: billing-policy}
spec:
  policies:
    timeouts: {quick: 500ms}
    retries:
      three: {policy: constant, duration: 50ms, maxRetries: 3, matching: {httpStatusCodes: "503"}}
    circuitBreakers:
      twoStrikes: {maxRequests: 1, timeout: 60s, trip: consecutiveFailures >= 2}
  targets:
    apps:
      billing: {timeout: quick, retry: three}
      flaky: {circuitBreaker: twoStrikes}
"""


class Flaky(App):
    """Answers 503 `failures` times, then as App does; or hangs on /slow."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    async def __call__(self, request: Request) -> Response:
        if (discovery := no_subscriptions(request)) is not None:
            return discovery
        if request.path == b"/slow":
            await trio.sleep_forever()
        if len(self.seen) < self.failures:
            self.seen.append(request)
            return Response.text(503, "not yet")
        return await super().__call__(request)


async def test_a_resiliency_policy_retries_times_out_and_breaks_the_circuit(
    tmp_path: Path,
) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "resiliency.yaml").write_text(RESILIENCY)
    recovering, down, broken = Flaky("billing", 2), Flaky("billing", 100), Flaky("flaky", 100)
    policy = ("--resources-path", str(resources))
    async with (
        backend(recovering) as port,
        sidecar("orders", None, tmp_path, *policy) as a,
        sidecar("billing", port, tmp_path),
    ):
        api = a.port("dapr-http")
        ok = await call(api, "POST", "/v1.0/invoke/billing/method/pay", body=b"5")
        slow = await call(api, "GET", "/v1.0/invoke/billing/method/slow")
    assert ok.status == 201
    assert len(recovering.seen) == 3  # two 503s, retried, then the answer
    assert json.loads(ok.body)["body"] == "5"  # the retried body arrived whole
    assert slow.status == 500
    assert "context deadline exceeded" in json.loads(slow.body)["message"]
    async with (
        backend(down) as port,
        sidecar("orders", None, tmp_path / "2", *policy) as a,
        sidecar("billing", port, tmp_path / "2"),
    ):
        exhausted = await call(a.port("dapr-http"), "POST", "/v1.0/invoke/billing/method/pay")
    assert exhausted.status == 503  # the app's last answer, after 1 + 3 attempts
    assert len(down.seen) == 4
    async with (
        backend(broken) as port,
        sidecar("orders", None, tmp_path / "3", *policy) as a,
        sidecar("flaky", port, tmp_path / "3"),
    ):
        first = [
            await call(a.port("dapr-http"), "GET", "/v1.0/invoke/flaky/method/x") for _ in "ab"
        ]
        tripped = await call(a.port("dapr-http"), "GET", "/v1.0/invoke/flaky/method/x")
    assert [r.status for r in first] == [503, 503]
    assert tripped.status == 500
    assert "circuit breaker is open" in json.loads(tripped.body)["message"]
    assert len(broken.seen) == 2  # the open breaker failed fast


class Counting(App):
    """Records the most requests it had in flight at once."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.in_flight = 0
        self.most = 0
        self.release = trio.Event()
        self.arrived = trio.Event()

    async def __call__(self, request: Request) -> Response:
        if (discovery := no_subscriptions(request)) is not None:
            return discovery
        self.arrived.set()
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
            return await super().__call__(request)
        finally:
            self.in_flight -= 1


async def test_h2c_callers_streamed_bodies_and_app_max_concurrency(tmp_path: Path) -> None:
    billing = Counting("billing")
    big = b"0123456789" * 500_000  # 5 MB, streamed through both sidecars
    component = tmp_path / "resources" / "store.yaml"
    component.parent.mkdir()
    component.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\n"
        "spec: {type: state.sqlite, version: v1, metadata: []}\n"
    )
    async with (
        backend(billing) as port,
        sidecar("orders", None, tmp_path, "--resources-path", str(component.parent)) as a,
        sidecar("billing", port, tmp_path, "--app-max-concurrency", "1") as b,
        H2Client.connect(a.port("dapr-http")) as h2,
    ):
        assert b.app.sidecar is not None
        slots = b.app.sidecar.app_slots
        assert slots is not None
        replies: list[Reply] = []

        async def send(body: bytes) -> None:
            replies.append(await h2.request("PUT", "/v1.0/invoke/billing/method/blob", [], body))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for body in (big, b"small", b"other"):
                    nursery.start_soon(send, body)
                await billing.arrived.wait()
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert slots.statistics().tasks_waiting == 2  # queued at the sidecar, not the app
                billing.release.set()
        metadata = json.loads((await call(a.port("dapr-http"), "GET", "/v1.0/metadata")).body)
    assert [r.status for r in replies] == [201, 201, 201]
    echoed = sorted(json.loads(r.body)["body"].encode() for r in replies)
    assert echoed == sorted([big, b"small", b"other"])  # every body arrived whole, both ways
    assert billing.most == 1  # --app-max-concurrency 1: one request at a time at the app
    assert metadata["components"][0] == {
        "name": "statestore",
        "type": "state.sqlite",
        "version": "v1",
        "capabilities": ["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"],
    }
