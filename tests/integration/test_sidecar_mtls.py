"""Sidecar security: mutual TLS between sidecars, rotation, trust domains, access control."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import trio

from proxy.http.model import header_get
from tests.exporters.receivers import http_receiver, wait_until
from tests.integration.harness import H1Client, backend
from tests.integration.sidecars import sidecar
from tests.integration.test_sidecar import App, call


async def test_a_plaintext_peer_is_refused_by_the_internal_port(tmp_path: Path) -> None:
    async with sidecar("orders", None, tmp_path) as a:
        stream = await trio.open_tcp_stream("127.0.0.1", a.port("dapr-internal"))
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            with trio.fail_after(10):
                # OpenSSL stops at the first bad record header, so the close may be a reset.
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(4096):
                        data += chunk
    assert b"HTTP/1.1" not in data  # the TLS server never answers plaintext


ACL = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: billing}
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: orders
      defaultAction: deny
      trustDomain: public
      namespace: default
      operations:
      - {name: /charge/**, httpVerb: [POST], action: allow}
"""


async def test_access_control_is_enforced_by_the_callee_on_the_mtls_identity(
    tmp_path: Path,
) -> None:
    config = tmp_path / "billing.yaml"
    config.write_text(ACL)
    orders, billing, audit = App("orders"), App("billing"), App("audit")
    async with (
        backend(orders) as orders_port,
        backend(billing) as billing_port,
        backend(audit) as audit_port,
        sidecar("orders", orders_port, tmp_path) as a,
        sidecar("audit", audit_port, tmp_path) as c,
        sidecar("billing", billing_port, tmp_path, "--config", str(config)),
    ):
        allowed = await call(a.port("dapr-http"), "POST", "/v1.0/invoke/billing/method/charge/1")
        wrong_verb = await call(a.port("dapr-http"), "GET", "/v1.0/invoke/billing/method/charge/1")
        other_path = await call(a.port("dapr-http"), "POST", "/v1.0/invoke/billing/method/refund")
        other_app = await call(c.port("dapr-http"), "POST", "/v1.0/invoke/billing/method/charge/1")
    assert allowed.status == 201
    for denied in (wrong_verb, other_path, other_app):
        assert denied.status == 403, denied.body
        body = json.loads(denied.body)
        assert body["errorCode"] == "ERR_DIRECT_INVOKE"
        assert "access control policy has denied access" in body["message"]
    assert [r.target for r in billing.seen] == [b"/charge/1"]


SHORT_LIVED = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: short-lived-certs}
spec:
  mtls: {workloadCertTTL: 2s, allowedClockSkew: 0s}
"""


async def test_certificates_rotate_under_load_without_a_failed_request(tmp_path: Path) -> None:
    config = tmp_path / "mtls.yaml"
    config.write_text(SHORT_LIVED)
    orders, billing = App("orders"), App("billing")
    statuses: list[int] = []
    async with (
        backend(orders) as orders_port,
        backend(billing) as billing_port,
        sidecar("orders", orders_port, tmp_path, "--config", str(config)) as a,
        sidecar("billing", billing_port, tmp_path, "--config", str(config)) as b,
    ):
        identities = [s.app.sidecar.identity for s in (a, b) if s.app.sidecar is not None]
        async with H1Client.connect(a.port("dapr-http")) as client:
            with trio.fail_after(30):  # each side renews at half-life: every second
                while min(i.rotations for i in identities) < 3:
                    reply = await client.request("POST", "/v1.0/invoke/billing/method/x", [], b"1")
                    statuses.append(reply.status)
        fresh = await call(a.port("dapr-http"), "GET", "/v1.0/invoke/billing/method/y")
    assert set(statuses) == {201}, statuses
    assert fresh.status == 201  # a new connection handshakes with the rotated certificates
    assert all(i.rotation_failures == 0 for i in identities)


async def test_a_peer_of_another_trust_domain_is_refused(tmp_path: Path) -> None:
    billing = App("billing")
    async with (
        backend(billing) as billing_port,
        sidecar("billing", billing_port, tmp_path) as b,
        sidecar("intruder", None, tmp_path, "--trust-domain", "elsewhere") as x,
    ):
        del b
        reply = await call(x.port("dapr-http"), "GET", "/v1.0/invoke/billing/method/secrets")
    assert reply.status == 500
    assert json.loads(reply.body)["errorCode"] == "ERR_DIRECT_INVOKE"
    assert billing.seen == []


async def test_a_sidecar_with_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared.db"
    resolution = (
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: nr}\nspec:\n"
        "  nameResolution:\n    component: sqlite\n"
        f"    configuration: {{connectionString: '{shared}'}}\n"
    )
    config = tmp_path / "nr.yaml"
    config.write_text(resolution)
    billing = App("billing")
    async with (
        backend(billing) as billing_port,
        sidecar("billing", billing_port, tmp_path / "one", "--config", str(config)),
        sidecar("rogue", None, tmp_path / "two", "--config", str(config)) as rogue,
    ):
        reply = await call(rogue.port("dapr-http"), "GET", "/v1.0/invoke/billing/method/x")
    assert reply.status == 500
    assert "failed to invoke, id: billing" in json.loads(reply.body)["message"]
    assert billing.seen == []


async def test_one_trace_across_both_sidecars_exported_to_zipkin(tmp_path: Path) -> None:
    billing = App("billing")
    with http_receiver() as (zipkin_port, received):
        config = tmp_path / "tracing.yaml"
        config.write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: t}\nspec:\n"
            "  tracing:\n    samplingRate: '1'\n"
            f"    zipkin: {{endpointAddress: 'http://127.0.0.1:{zipkin_port}/api/v2/spans'}}\n"
        )
        traced = ("--config", str(config))
        async with (
            backend(billing) as port,
            sidecar("orders", None, tmp_path, *traced) as a,
            sidecar("billing", port, tmp_path, *traced),
        ):
            reply = await call(a.port("dapr-http"), "GET", "/v1.0/invoke/billing/method/x")
        assert reply.status == 201
        await wait_until(lambda: len(received.zipkin_spans()) >= 4, "four spans")
    assert received.errors == []  # every batch valid against the Zipkin spec
    spans = received.zipkin_spans()
    assert len({s["traceId"] for s in spans}) == 1
    by_service = {(s["localEndpoint"]["serviceName"], s["kind"]): s for s in spans}
    a_server, a_client = by_service[("orders", "SERVER")], by_service[("orders", "CLIENT")]
    b_server, b_client = by_service[("billing", "SERVER")], by_service[("billing", "CLIENT")]
    assert "parentId" not in a_server
    assert a_client["parentId"] == a_server["id"]
    assert b_server["parentId"] == a_client["id"]  # continued over the mutual-TLS hop
    assert b_client["parentId"] == b_server["id"]
    traceparent = billing.seen[0]
    assert header_get(traceparent.headers, b"traceparent") is not None
    assert (
        header_get(traceparent.headers, b"traceparent").split(b"-")[1].decode()
        == (a_server["traceId"])
    )
