"""Reading the SPIFFE id out of an X.509 certificate (cryptography): issuers and tests."""

from __future__ import annotations

from cryptography import x509

from proxy.tls.spiffe import SpiffeId

__all__ = ["peer_spiffe_id", "spiffe_id_of"]


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId | None:
    """The SPIFFE id of a certificate: its one URI SAN, parsed; None if absent or invalid."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    # X509-SVID spec §2: an SVID carries exactly one URI SAN.
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0])
    except ValueError:
        return None


def peer_spiffe_id(cert_der: bytes) -> SpiffeId | None:
    """The SPIFFE id in a DER certificate, as ``SSLStream.getpeercert(binary_form=True)`` gives.

    Raises ValueError if ``cert_der`` is not a DER certificate at all.
    """
    return spiffe_id_of(x509.load_der_x509_certificate(cert_der))
