"""Embedded CA, SPIFFE workload certificates, mTLS contexts and their rotation."""

from __future__ import annotations

from proxy.tls.ca import CertificateAuthority
from proxy.tls.errors import CaError, InvalidCsrError, PeerIdentityError, WorkloadCertError
from proxy.tls.spiffe import SpiffeId, peer_spiffe_id
from proxy.tls.workload import WorkloadIdentity, check_peer
from proxy.tls.workload_cert import SignedCert, WorkloadCert

__all__ = [
    "CaError",
    "CertificateAuthority",
    "InvalidCsrError",
    "PeerIdentityError",
    "SignedCert",
    "SpiffeId",
    "WorkloadCert",
    "WorkloadCertError",
    "WorkloadIdentity",
    "check_peer",
    "peer_spiffe_id",
]
