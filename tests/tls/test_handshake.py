"""Mutual TLS between sidecars over real loopback sockets: who gets in and who is refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

from proxy.tls.ca import CertificateAuthority
from proxy.tls.contexts import load_chain, new_client_context
from proxy.tls.errors import PeerIdentityError
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload import WorkloadIdentity, check_peer
from tests.tls.helpers import (
    attempt_tls,
    echo_once,
    new_ca,
    peer_serial,
    refused_after_handshake,
    sid,
    tls_listener,
)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return new_ca(tmp_path / "ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    return new_ca(tmp_path / "other-ca")


def identity(ca: CertificateAuthority, spiffe_id: SpiffeId) -> WorkloadIdentity:
    return WorkloadIdentity.issue(spiffe_id, ca.issue)


async def test_two_sidecars_of_one_ca_connect_with_h2_and_see_each_other(
    ca: CertificateAuthority,
) -> None:
    orders, billing = identity(ca, sid("orders")), identity(ca, sid("billing"))
    async with attempt_tls(billing.server_context(), orders.client_context()) as attempt:
        assert attempt.server is not None
        assert attempt.client is not None
        assert attempt.server.selected_alpn_protocol() == "h2"
        assert attempt.client.selected_alpn_protocol() == "h2"
        assert billing.verify_peer(attempt.server) == sid("orders")
        assert orders.verify_peer(attempt.client, expected=sid("billing")) == sid("billing")
        assert peer_serial(attempt.client) == billing.current.serial
        assert peer_serial(attempt.server) == orders.current.serial
        assert attempt.server.version() in ("TLSv1.2", "TLSv1.3")
        await echo_once(attempt.client, attempt.server, b"ping")
        await echo_once(attempt.server, attempt.client, b"pong")


async def test_a_client_certificate_from_another_ca_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    billing = identity(ca, sid("billing"))
    # Trusts our root (so it accepts the server) but presents a certificate from another CA.
    impostor = new_client_context(ca.trust_anchors_pem)
    load_chain([impostor], other_ca.issue(sid("orders")))
    async with attempt_tls(billing.server_context(), impostor) as attempt:
        assert isinstance(attempt.server_error, trio.BrokenResourceError)
        assert isinstance(attempt.server_error.__cause__, ssl.SSLError)
        assert "certificate verify failed" in str(attempt.server_error.__cause__)
        assert attempt.client_error is not None or (
            attempt.client is not None and await refused_after_handshake(attempt.client)
        )


async def test_a_server_certificate_from_another_ca_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    impostor, orders = identity(other_ca, sid("billing")), identity(ca, sid("orders"))
    async with attempt_tls(impostor.server_context(), orders.client_context()) as attempt:
        assert isinstance(attempt.client_error, trio.BrokenResourceError)
        assert "certificate verify failed" in str(attempt.client_error.__cause__)
        assert attempt.server is None


async def test_a_client_without_a_certificate_is_refused(ca: CertificateAuthority) -> None:
    billing = identity(ca, sid("billing"))
    anonymous = new_client_context(ca.trust_anchors_pem)
    async with attempt_tls(billing.server_context(), anonymous) as attempt:
        assert isinstance(attempt.server_error, trio.BrokenResourceError)
        assert "certificate" in str(attempt.server_error.__cause__).lower()
        assert attempt.client_error is not None or (
            attempt.client is not None and await refused_after_handshake(attempt.client)
        )


async def test_a_plaintext_client_is_refused_cleanly(ca: CertificateAuthority) -> None:
    billing = identity(ca, sid("billing"))
    server_error: list[BaseException] = []
    async with tls_listener() as (listener, port):

        async def serve() -> None:
            tcp = await listener.accept()
            tls = trio.SSLStream(tcp, billing.server_context(), server_side=True)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                server_error.append(exc)
            finally:
                await trio.aclose_forcefully(tls)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    await client.send_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: b\r\n\r\n")
                    answer = b""
                    while chunk := await client.receive_some():
                        answer += chunk
    assert len(server_error) == 1
    assert isinstance(server_error[0].__cause__, ssl.SSLError)
    assert not answer.startswith(b"HTTP/")


async def test_verify_peer_rejects_another_app_id(ca: CertificateAuthority) -> None:
    orders, billing = identity(ca, sid("orders")), identity(ca, sid("billing"))
    async with attempt_tls(billing.server_context(), orders.client_context()) as attempt:
        assert attempt.client is not None
        with pytest.raises(PeerIdentityError, match="expected spiffe://public/ns/default/stock"):
            orders.verify_peer(attempt.client, expected=sid("stock"))
        with pytest.raises(PeerIdentityError, match="expected"):
            orders.verify_peer(attempt.client, expected=sid("billing", namespace="prod"))


async def test_verify_peer_rejects_another_trust_domain(ca: CertificateAuthority) -> None:
    # One CA may sign several trust domains; the handshake succeeds, the identity check does not.
    orders = identity(ca, sid("orders"))
    stranger = identity(ca, sid("orders", trust_domain="partner.example"))
    async with attempt_tls(orders.server_context(), stranger.client_context()) as attempt:
        assert attempt.server is not None
        with pytest.raises(PeerIdentityError, match="not in trust domain 'public'"):
            orders.verify_peer(attempt.server)


def test_check_peer_without_a_certificate() -> None:
    with pytest.raises(PeerIdentityError, match="no certificate"):
        check_peer(None, "public")


def test_contexts_are_shared_and_strict(ca: CertificateAuthority) -> None:
    orders = identity(ca, sid("orders"))
    server, client = orders.server_context(), orders.client_context()
    assert orders.server_context() is server
    assert orders.client_context() is client
    for ctx in (server, client):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert not client.check_hostname
    assert "PRIVATE KEY" not in repr(orders.current)
