"""X.509 builders for the CA hierarchy: root, issuer (intermediate) and SPIFFE workload leaves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.tls.pem import SigningKey, signature_hash
from proxy.tls.spiffe import SpiffeId

# Dapr Sentry's defaultCATTL: root and issuer are valid for one year.
CA_TTL = timedelta(days=365)
ISSUER_COMMON_NAME = "meshwire issuer"

_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (for the CA and for every workload certificate)."""
    return ec.generate_private_key(ec.SECP256R1())


def _authority_key_id(
    issuer: x509.Certificate, issuer_key: SigningKey
) -> x509.AuthorityKeyIdentifier:
    # Chain building matches AKI to the issuer's SKI, so reuse a BYO issuer's SKI verbatim.
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_root(
    key: ec.EllipticCurvePrivateKey, trust_domain: str, now: datetime, skew: timedelta
) -> x509.Certificate:
    """Self-signed root: CA, keyCertSign|cRLSign, Subject O=<trust domain>, one year."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - skew)
        .not_valid_after(now + CA_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, signature_hash(key))
    )


def build_issuer(
    key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    root_key: SigningKey,
    trust_domain: str,
    now: datetime,
    skew: timedelta,
) -> x509.Certificate:
    """Intermediate CA signed by the root: pathlen 0, one year (clipped to the root)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, ISSUER_COMMON_NAME),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - skew)
        .not_valid_after(min(now + CA_TTL, root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(root, root_key), critical=False)
        .sign(root_key, signature_hash(root_key))
    )


def build_leaf(
    public_key: CertificatePublicKeyTypes,
    spiffe_id: SpiffeId,
    dns_names: Sequence[str],
    issuer: x509.Certificate,
    issuer_key: SigningKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """An X509-SVID: URI SAN = the SPIFFE id, serverAuth+clientAuth, digitalSignature only."""
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
    names.extend(x509.DNSName(name) for name in dns_names)
    return (
        x509.CertificateBuilder()
        # X509-SVID spec leaves the subject open; RFC 5280 §4.2.1.6 then wants the SAN critical.
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer, issuer_key), critical=False)
        .sign(issuer_key, signature_hash(issuer_key))
    )
