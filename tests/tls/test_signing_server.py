"""The signing service (`meshwire ca serve`) and the sidecar's remote issuer, over real TLS."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from proxy.tls.ca import CertificateAuthority
from proxy.tls.contexts import load_chain
from proxy.tls.errors import CaError
from proxy.tls.remote_issuer import (
    RemoteIssuer,
    SigningRequestRejected,
    SigningServiceSettingsError,
    SigningServiceUnreachable,
    SigningServiceUntrusted,
)
from proxy.tls.signing_server import MAX_BODY, SigningService, TokenTable
from proxy.tls.workload import WorkloadIdentity
from tests.tls.helpers import chain_certificates, new_ca, sid, tls_listener

TOKENS = """\
# token       apps it may sign for
t-orders      orders
t-billing     billing.prod   audit
t-admin       *
"""
DEADLINE = 30


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return new_ca(tmp_path / "ca")


@pytest.fixture
def tokens(tmp_path: Path) -> TokenTable:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return TokenTable.load(path)


@asynccontextmanager
async def serving(ca: CertificateAuthority, tokens: TokenTable) -> AsyncIterator[int]:
    service = SigningService(ca, tokens, "public", hostname="ca.example")
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(service.serve, "127.0.0.1", 0)
        yield port
        nursery.cancel_scope.cancel()


def csr_pem(key: ec.EllipticCurvePrivateKey, claimed: str = "admin") -> str:
    """A CSR whose subject and SAN claim another identity than the one the caller asks for."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, claimed)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://public/ns/default/{claimed}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def sign_request(token: str, app_id: str = "orders", namespace: str = "default") -> bytes:
    csr = csr_pem(ec.generate_private_key(ec.SECP256R1()))
    fields = {"app_id": app_id, "namespace": namespace, "csr": csr, "token": token}
    return json.dumps(fields).encode()


async def call(
    port: int,
    anchors: bytes,
    body: bytes | None,
    *,
    method: str = "POST",
    path: str = "/v1/sign",
) -> tuple[int, dict[str, str] | None]:
    """One HTTPS request (stdlib client, in a worker thread): status and JSON body."""

    def blocking() -> tuple[int, dict[str, str] | None]:
        ctx = ssl.create_default_context(cadata=anchors.decode())
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=DEADLINE)
        try:
            conn.request(method, path, body, {"content-type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status, json.loads(data) if data else None

    with trio.fail_after(DEADLINE):
        return await trio.to_thread.run_sync(blocking)


def issuer_for(port: int, anchors: bytes, token: str) -> RemoteIssuer:
    return RemoteIssuer(f"https://127.0.0.1:{port}", anchors, "public", token=token)


async def issue(issuer: RemoteIssuer, app_id: str) -> object:
    with trio.fail_after(DEADLINE):
        return await trio.to_thread.run_sync(issuer, sid(app_id))


async def test_signs_for_the_requested_app_not_for_what_the_csr_claims(
    ca: CertificateAuthority, tokens: TokenTable
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = {"app_id": "orders", "namespace": "default", "csr": csr_pem(key), "token": "t-orders"}
    async with serving(ca, tokens) as port:
        status, answer = await call(port, ca.trust_anchors_pem, json.dumps(body).encode())
    assert status == 200
    assert answer is not None
    leaf, issuer = chain_certificates(answer["workload_certificate"].encode())
    store = Store(x509.load_pem_x509_certificates(answer["trust_chain"].encode()))
    verified = PolicyBuilder().store(store).build_client_verifier().verify(leaf, [issuer])
    assert verified.subjects is not None
    assert answer["trust_chain"].encode() == ca.trust_anchors_pem
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://public/ns/default/orders"
    ]
    assert leaf.subject == x509.Name([])  # the CSR's CN=admin is not copied
    assert leaf.public_key() == key.public_key()
    assert datetime.fromisoformat(answer["valid_until"]) == leaf.not_valid_after_utc


async def test_the_remote_issuer_gets_a_fresh_key_and_a_usable_certificate_each_time(
    ca: CertificateAuthority, tokens: TokenTable, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t-billing\n")
    async with serving(ca, tokens) as port:
        environ = {
            "DAPR_TRUST_ANCHORS": ca.trust_anchors_pem.decode(),
            "DAPR_SENTRY_TOKEN_FILE": str(token_file),
        }
        issuer = RemoteIssuer.from_env(f"https://127.0.0.1:{port}", "public", environ)
        with trio.fail_after(DEADLINE):
            first = await trio.to_thread.run_sync(issuer, sid("billing", "prod"))
            second = await trio.to_thread.run_sync(issuer, sid("billing", "prod"))
    identity = WorkloadIdentity(first, issuer)  # loads key and chain into both TLS contexts
    assert identity.spiffe_id == sid("billing", "prod")
    assert first.key_pem != second.key_pem
    assert first.serial != second.serial
    assert first.trust_anchors_pem == ca.trust_anchors_pem
    assert first.not_before < first.not_after


async def test_a_wrong_or_missing_token_is_refused_with_401(
    ca: CertificateAuthority, tokens: TokenTable
) -> None:
    async with serving(ca, tokens) as port:
        wrong = await call(port, ca.trust_anchors_pem, sign_request("t-nope"))
        missing = await call(port, ca.trust_anchors_pem, sign_request(""))
        with pytest.raises(SigningRequestRejected) as refused:
            await issue(issuer_for(port, ca.trust_anchors_pem, "t-nope"), "orders")
    assert wrong == (401, {"error": "unauthenticated", "message": "missing or unknown token"})
    assert missing[0] == 401
    assert refused.value.status == 401
    assert f"https://127.0.0.1:{port}" in str(refused.value)
    assert "t-nope" not in str(refused.value)


async def test_a_token_signs_only_for_its_apps_and_namespaces(
    ca: CertificateAuthority, tokens: TokenTable
) -> None:
    anchors = ca.trust_anchors_pem
    async with serving(ca, tokens) as port:
        other_app = await call(port, anchors, sign_request("t-orders", "billing"))
        other_ns = await call(port, anchors, sign_request("t-orders", "orders", "prod"))
        listed = await call(port, anchors, sign_request("t-billing", "billing", "prod"))
        listed_default = await call(port, anchors, sign_request("t-billing", "audit"))
        wildcard = await call(port, anchors, sign_request("t-admin", "anything", "ops"))
        with pytest.raises(SigningRequestRejected) as refused:
            await issue(issuer_for(port, anchors, "t-orders"), "billing")
    assert other_app[0] == other_ns[0] == 403
    assert other_app[1] is not None
    assert other_app[1]["error"] == "forbidden"
    assert (listed[0], listed_default[0], wildcard[0]) == (200, 200, 200)
    assert refused.value.status == 403
    assert "spiffe://public/ns/default/billing" in str(refused.value)


async def test_bad_requests_are_refused_with_json_errors(
    ca: CertificateAuthority, tokens: TokenTable
) -> None:
    anchors = ca.trust_anchors_pem
    garbage = {"app_id": "orders", "namespace": "default", "csr": "not a CSR", "token": "t-orders"}
    huge = json.dumps({**garbage, "csr": "x" * MAX_BODY}).encode()
    async with serving(ca, tokens) as port:
        bad_csr = await call(port, anchors, json.dumps(garbage).encode())
        not_json = await call(port, anchors, b"{not json")
        bad_app = await call(port, anchors, sign_request("t-admin", "no/slashes"))
        too_large = await call(port, anchors, huge)
        health = await call(port, anchors, None, method="GET", path="/healthz")
        unknown = await call(port, anchors, None, method="GET", path="/v1/other")
    assert bad_csr[0] == 400
    assert bad_csr[1] is not None
    assert bad_csr[1]["error"] == "bad_csr"
    assert (not_json[0], bad_app[0]) == (400, 400)
    assert too_large[0] == 413
    assert too_large[1] is not None
    assert too_large[1]["error"] == "too_large"
    assert health == (204, None)
    assert unknown[0] == 404


async def test_the_issuer_refuses_a_server_that_is_not_from_its_trust_anchors(
    ca: CertificateAuthority, tokens: TokenTable, tmp_path: Path
) -> None:
    stranger = new_ca(tmp_path / "stranger")
    async with serving(ca, tokens) as port:
        with pytest.raises(SigningServiceUntrusted) as refused:
            await issue(issuer_for(port, stranger.trust_anchors_pem, "t-orders"), "orders")
    assert "trust anchors" in str(refused.value)
    assert f"127.0.0.1:{port}" in str(refused.value)


async def test_the_issuer_refuses_a_server_with_another_spiffe_id_before_sending_the_token(
    ca: CertificateAuthority,
) -> None:
    impostor = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_chain((impostor,), ca.issue(sid("impostor")))  # same CA, but a workload's identity
    received = bytearray()
    async with tls_listener() as (listener, port):

        async def serve_once() -> None:
            tls = trio.SSLStream(await listener.accept(), impostor, server_side=True)
            try:
                await tls.do_handshake()
                while data := await tls.receive_some():
                    received.extend(data)
            except trio.BrokenResourceError:
                pass
            finally:
                await trio.aclose_forcefully(tls)

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_once)
                with pytest.raises(SigningServiceUntrusted) as refused:
                    await issue(issuer_for(port, ca.trust_anchors_pem, "t-orders"), "orders")
    assert "spiffe://public/ns/default/impostor" in str(refused.value)
    assert "spiffe://public/ns/meshwire-system/meshwire-ca" in str(refused.value)
    assert received == b""  # not a byte of the request (or the token) was sent


async def test_an_address_nobody_listens_on_is_reported_as_unreachable(
    ca: CertificateAuthority,
) -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(SigningServiceUnreachable) as refused:
            await issue(issuer_for(port, ca.trust_anchors_pem, "t-orders"), "orders")
    assert str(refused.value) == f"https://127.0.0.1:{port}: connection refused"


def test_token_file_problems_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nt-ok orders\nt-lonely\n")
    with pytest.raises(CaError, match=rf"{path}:4: .*no app listed"):
        TokenTable.load(path)
    path.write_text("t-bad or/ders\n")
    with pytest.raises(CaError, match=rf"{path}:1: .*app id"):
        TokenTable.load(path)
    path.write_text("# nothing but comments\n")
    with pytest.raises(CaError, match="no tokens"):
        TokenTable.load(path)


def test_bad_addresses_and_anchors_are_refused_up_front(ca: CertificateAuthority) -> None:
    anchors = ca.trust_anchors_pem
    with pytest.raises(SigningServiceSettingsError, match="https://host:port"):
        RemoteIssuer("http://127.0.0.1:1", anchors, "public")
    with pytest.raises(SigningServiceSettingsError, match="DAPR_TRUST_ANCHORS: not set"):
        RemoteIssuer.from_env("https://127.0.0.1:1", "public", {})
    with pytest.raises(SigningServiceSettingsError, match="DAPR_TRUST_ANCHORS"):
        RemoteIssuer.from_env("127.0.0.1:1", "public", {"DAPR_TRUST_ANCHORS": "junk"})
    issuer = RemoteIssuer.from_env(
        "127.0.0.1:1",
        "public",
        {"DAPR_TRUST_ANCHORS": anchors.decode(), "DAPR_SENTRY_TOKEN_FILE": "/nonexistent/token"},
    )
    with pytest.raises(SigningServiceSettingsError, match="DAPR_SENTRY_TOKEN_FILE=/nonexistent"):
        issuer(sid("orders"))
