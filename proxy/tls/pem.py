"""PEM parsing and CA-material checks whose errors name the file (or variable) at fault."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from proxy.tls.errors import CaError

# The keys meshwire makes and accepts. DSA is left out on purpose: it is deprecated (FIPS 186-5)
# and merely loading one makes cryptography warn, so such keys are refused before parsing.
SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

_DSA_OID_DER = bytes.fromhex("06072a8648ce380401")  # OBJECT IDENTIFIER 1.2.840.10040.4.1 (id-dsa)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.DOTALL)


def load_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; CaError if there is none or one is malformed."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CaError(f"{source}: not a valid PEM certificate: {exc}") from None
    if not certs:
        raise CaError(f"{source}: contains no PEM certificate")
    return certs


def load_private_key(data: bytes, source: str) -> SigningKey:
    """An unencrypted PEM private key that can sign certificates (RSA, ECDSA or EdDSA)."""
    if _is_dsa_key(data):
        raise CaError(
            f"{source}: a DSA key: meshwire never makes or accepts DSA keys;"
            " use an ECDSA (P-256), RSA or Ed25519 key"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CaError(f"{source}: not a valid unencrypted PEM private key: {exc}") from None
    if not isinstance(key, SigningKey):
        raise CaError(f"{source}: a {type(key).__name__} cannot sign certificates")
    return key


def _is_dsa_key(data: bytes) -> bool:
    """A traditional `DSA PRIVATE KEY` block, or PKCS#8 whose AlgorithmIdentifier is id-dsa."""
    match = _PEM_BLOCK.search(data)
    if match is None:
        return False
    label, body = match.groups()
    if label == b"DSA PRIVATE KEY":
        return True
    if label != b"PRIVATE KEY":
        return False
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    # PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier { OID, ... }, ... }: the OID
    # sits within the first few dozen bytes whatever the length encodings.
    return _DSA_OID_DER in der[:32]


def signature_hash(key: SigningKey) -> hashes.SHA256 | None:
    """The digest to sign with: EdDSA keys hash internally and take none."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key_matches(
    key: SigningKey, key_source: str, cert: x509.Certificate, cert_source: str
) -> None:
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise CaError(f"{key_source}: private key does not match the certificate in {cert_source}")


def check_is_ca(cert: x509.Certificate, source: str) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CaError(f"{source}: not a CA certificate (no basicConstraints)") from None
    if not constraints.ca:
        raise CaError(f"{source}: not a CA certificate (basicConstraints CA is false)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise CaError(f"{source}: not a CA certificate (KeyUsage lacks keyCertSign)")


def check_valid_at(cert: x509.Certificate, source: str, now: datetime) -> None:
    if now >= cert.not_valid_after_utc:
        raise CaError(f"{source}: certificate expired at {cert.not_valid_after_utc.isoformat()}")
    if now < cert.not_valid_before_utc:
        raise CaError(
            f"{source}: certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
        )


def find_signer(
    child: x509.Certificate,
    child_source: str,
    parents: Sequence[x509.Certificate],
    parents_source: str,
) -> x509.Certificate:
    """The certificate among ``parents`` that issued ``child`` (name and signature)."""
    for parent in parents:
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return parent
    raise CaError(f"{child_source}: not signed by the root certificate(s) in {parents_source}")


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
