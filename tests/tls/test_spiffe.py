"""SPIFFE ids: strict parsing, formatting, and reading them out of DER certificates."""

from __future__ import annotations

import dataclasses

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.tls.spiffe import SpiffeId, spiffe_id_in
from proxy.tls.svid import peer_spiffe_id
from tests.tls.helpers import FIXED_NOW


def test_parse_and_format_round_trip() -> None:
    parsed = SpiffeId.parse("spiffe://cluster.local/ns/dapr-system/dapr_sentry.v1")
    assert parsed == SpiffeId("cluster.local", "dapr-system", "dapr_sentry.v1")
    assert str(parsed) == "spiffe://cluster.local/ns/dapr-system/dapr_sentry.v1"


def test_is_frozen() -> None:
    spiffe_id = SpiffeId("public", "default", "orders")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spiffe_id.app_id = "billing"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("https://public/ns/default/orders", "must start with"),
        ("spiffe://public/ns/default", "/ns/<namespace>/<app id>"),
        ("spiffe://public/ns/default/orders/extra", "/ns/<namespace>/<app id>"),
        ("spiffe://public/ns/default/orders/", "/ns/<namespace>/<app id>"),
        ("spiffe://public/namespace/default/orders", "/ns/<namespace>/<app id>"),
        ("spiffe://public", "/ns/<namespace>/<app id>"),
        ("spiffe:///ns/default/orders", "trust domain is empty"),
        ("spiffe://Public/ns/default/orders", "lowercase"),
        ("spiffe://public:443/ns/default/orders", "port"),
        ("spiffe://user@public/ns/default/orders", "user info"),
        ("spiffe://public/ns/default/orders?x=1", "query"),
        ("spiffe://public/ns/default/orders#frag", "fragment"),
        ("spiffe://public/ns/default/ord%20ers", "percent"),
        ("spiffe://public/ns//orders", "namespace is empty"),
        ("spiffe://public/ns/default/..", "app id"),
        ("spiffe://public/ns/def ault/orders", "namespace"),
    ],
)
def test_parse_rejects_with_a_clear_message(uri: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="SPIFFE") as caught:
        SpiffeId.parse(uri)
    assert complaint in str(caught.value)
    assert repr(uri) in str(caught.value)


def test_constructor_validates_parts() -> None:
    with pytest.raises(ValueError, match="app id"):
        SpiffeId("public", "default", "a/b")
    with pytest.raises(ValueError, match="longer than"):
        SpiffeId("a" * 256, "default", "orders")


def _der_with_sans(*names: x509.GeneralName) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(FIXED_NOW)
        .not_valid_after(FIXED_NOW.replace(year=2031))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_peer_spiffe_id_reads_the_uri_san() -> None:
    der = _der_with_sans(
        x509.DNSName("orders.local"),
        x509.UniformResourceIdentifier("spiffe://public/ns/default/orders"),
    )
    assert peer_spiffe_id(der) == SpiffeId("public", "default", "orders")


@pytest.mark.parametrize(
    "names",
    [
        (),
        (x509.DNSName("orders.local"),),
        (x509.UniformResourceIdentifier("https://example.com/orders"),),
        # X509-SVID: exactly one URI SAN, so two make the certificate no SVID at all.
        (
            x509.UniformResourceIdentifier("spiffe://public/ns/default/orders"),
            x509.UniformResourceIdentifier("spiffe://public/ns/default/billing"),
        ),
    ],
)
def test_peer_spiffe_id_is_none_without_exactly_one_spiffe_uri(
    names: tuple[x509.GeneralName, ...],
) -> None:
    assert peer_spiffe_id(_der_with_sans(*names)) is None


def test_peer_spiffe_id_of_a_web_certificate_is_none() -> None:
    leaf = trustme.CA().issue_cert("orders.example")
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert peer_spiffe_id(der) is None


def test_peer_spiffe_id_rejects_non_der() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message is not ours to pin
        peer_spiffe_id(b"not a certificate")


@pytest.mark.parametrize(
    ("sans", "found"),
    [
        ((("DNS", "orders.local"), ("URI", "spiffe://public/ns/default/orders")), "orders"),
        ((), None),
        ((("DNS", "orders.local"),), None),
        ((("URI", "https://example.com/orders"),), None),
        (
            (("URI", "spiffe://public/ns/default/orders"), ("URI", "spiffe://public/ns/a/b")),
            None,
        ),
    ],
)
def test_spiffe_id_in_reads_a_verified_peer_certificate_as_ssl_gives_it(
    sans: tuple[tuple[str, str], ...], found: str | None
) -> None:
    """The `getpeercert()` form the sidecar checks peers with: no cryptography needed."""
    peer_cert = {"subject": ((("organizationName", "x"),),), "subjectAltName": sans}
    expected = SpiffeId("public", "default", found) if found else None
    assert spiffe_id_in(peer_cert) == expected
    assert spiffe_id_in({}) is None
