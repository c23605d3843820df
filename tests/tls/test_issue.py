"""Workload certificates: X509-SVID shape, validity window, chain, and CSR signing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from proxy.tls.builders import CA_TTL
from proxy.tls.ca import CertificateAuthority
from proxy.tls.errors import CaError, InvalidCsrError
from proxy.tls.spiffe import SpiffeId
from tests.tls.helpers import FIXED_NOW, FixedClock, chain_certificates, new_ca, sid


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def ca(tmp_path: Path, clock: FixedClock) -> CertificateAuthority:
    return new_ca(tmp_path, clock)


def test_leaf_is_an_x509_svid(ca: CertificateAuthority) -> None:
    issued = ca.issue(sid("orders"), dns_names=["orders.default.svc"])
    leaf, issuer = chain_certificates(issued.cert_chain_pem)
    assert issued.spiffe_id == sid("orders")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://public/ns/default/orders"
    ]
    assert san.value.get_values_for_type(x509.DNSName) == ["orders.default.svc"]
    assert san.critical  # the subject is empty (RFC 5280 §4.2.1.6)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not (usage.value.key_cert_sign)
    assert not (usage.value.key_encipherment)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.serial_number == issued.serial
    assert issuer.public_bytes(serialization.Encoding.PEM) == ca.issuer_cert_pem


def test_every_issuance_has_a_new_p256_key(ca: CertificateAuthority) -> None:
    first, second = ca.issue(sid("orders")), ca.issue(sid("orders"))
    keys = [serialization.load_pem_private_key(c.key_pem, None) for c in (first, second)]
    assert all(isinstance(k, ec.EllipticCurvePrivateKey) for k in keys)
    assert all(
        isinstance(k.curve, ec.SECP256R1) for k in keys if isinstance(k, ec.EllipticCurvePrivateKey)
    )
    leaf = chain_certificates(first.cert_chain_pem)[0]
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(*public) == keys[0].public_key().public_bytes(*public)
    assert keys[0].public_key().public_bytes(*public) != keys[1].public_key().public_bytes(*public)
    assert first.serial != second.serial


def test_validity_is_backdated_by_the_skew_and_lasts_the_ttl(ca: CertificateAuthority) -> None:
    issued = ca.issue(sid("orders"), ttl=timedelta(hours=2), clock_skew=timedelta(minutes=5))
    assert issued.not_before == FIXED_NOW - timedelta(minutes=5)
    assert issued.not_after == FIXED_NOW + timedelta(hours=2)
    default = ca.issue(sid("orders"))
    assert default.not_before == FIXED_NOW - timedelta(minutes=15)
    assert default.not_after == FIXED_NOW + timedelta(hours=24)


def test_validity_is_clipped_to_the_issuer(ca: CertificateAuthority, clock: FixedClock) -> None:
    clock.now = FIXED_NOW + CA_TTL - timedelta(hours=1)
    issued = ca.issue(sid("orders"))
    assert issued.not_after == ca.issuer_not_after == FIXED_NOW + CA_TTL
    assert chain_certificates(issued.cert_chain_pem)[0].not_valid_after_utc == ca.issuer_not_after


def test_an_expired_issuer_issues_nothing(ca: CertificateAuthority, clock: FixedClock) -> None:
    clock.now = FIXED_NOW + CA_TTL
    with pytest.raises(CaError, match=r"issuer\.crt: certificate expired"):
        ca.issue(sid("orders"))


def test_ttl_must_be_positive(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="TTL must be positive"):
        ca.issue(sid("orders"), ttl=timedelta(0))


def test_chain_verifies_to_the_root(ca: CertificateAuthority) -> None:
    issued = ca.issue(sid("orders"))
    leaf, issuer = chain_certificates(issued.cert_chain_pem)
    store = Store(x509.load_pem_x509_certificates(issued.trust_anchors_pem))
    verifier = PolicyBuilder().store(store).time(FIXED_NOW).build_client_verifier()
    verified = verifier.verify(leaf, [issuer])
    assert verified.subjects == [x509.UniformResourceIdentifier(str(sid("orders")))]


def test_chain_does_not_verify_to_another_root(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = new_ca(tmp_path / "other", FixedClock())
    leaf, issuer = chain_certificates(ca.issue(sid("orders")).cert_chain_pem)
    store = Store(x509.load_pem_x509_certificates(other.trust_anchors_pem))
    verifier = PolicyBuilder().store(store).time(FIXED_NOW).build_client_verifier()
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(leaf, [issuer])


def _csr(key: ec.EllipticCurvePrivateKey, claimed: str) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(claimed)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def test_sign_csr_takes_the_identity_from_the_caller_not_the_csr(
    ca: CertificateAuthority,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signed = ca.sign_csr(_csr(key, "spiffe://public/ns/kube-system/admin"), sid("orders"))
    leaf = chain_certificates(signed.cert_chain_pem)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(sid("orders"))]
    assert leaf.subject == x509.Name([])
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(*public) == key.public_key().public_bytes(*public)
    assert signed.not_after == FIXED_NOW + timedelta(hours=24)


def test_sign_csr_refuses_a_forged_signature(ca: CertificateAuthority) -> None:
    pem = _csr(ec.generate_private_key(ec.SECP256R1()), str(sid("orders")))
    request = x509.load_pem_x509_csr(pem)
    der = bytearray(request.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # inside the signature's last INTEGER: still parses, no longer verifies
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidCsrError, match="signature does not verify"):
        ca.sign_csr(forged, sid("orders"))


def test_sign_csr_refuses_garbage(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidCsrError, match="CSR: not a valid PEM"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", sid("orders"))


def test_issue_for_another_trust_domain(ca: CertificateAuthority) -> None:
    other = SpiffeId("other.domain", "default", "orders")
    leaf = chain_certificates(ca.issue(other).cert_chain_pem)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(other)]
