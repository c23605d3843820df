"""The sidecar's workload identity: from a signing service, the operator's CA or the local one."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from config.sidecar import Mtls
from proxy.tls.errors import WorkloadCertError
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload import Issuer, WorkloadIdentity
from proxy.tls.workload_cert import WorkloadCert

if TYPE_CHECKING:
    from proxy.tls.ca import CertificateAuthority

_NATIVE_CRYPTOGRAPHY = "cryptography.hazmat.bindings._rust"  # what costs the memory


def make_identity(mtls: Mtls, spiffe_id: SpiffeId, environ: Mapping[str, str]) -> WorkloadIdentity:
    """With a sentry address, certificates signed by `meshwire ca serve` there; else
    DAPR_TRUST_ANCHORS / DAPR_CERT_CHAIN / DAPR_CERT_KEY when set, else the CA directory,
    created on first start. The first certificate is issued here (blocking, before serving);
    CaError (and, from the signing service, SigningServiceError) says why it could not be.

    Issuing takes cryptography (~10 MB resident once imported), which nothing else in a sidecar
    needs: unless this process has it loaded already, each certificate (the first one and every
    renewal) is issued by a child process (proxy/sidecar/issuer_process.py), which fails the
    same way. (The redis client imports the `cryptography` package, but not its library.)"""
    issue: Issuer
    if _NATIVE_CRYPTOGRAPHY in sys.modules:
        issue = local_issuer(mtls, environ)
    else:
        from proxy.sidecar.issuer_process import ChildIssuer

        issue = ChildIssuer(mtls, environ)
    return WorkloadIdentity.issue(spiffe_id, issue)


def local_issuer(mtls: Mtls, environ: Mapping[str, str]) -> Issuer:
    """The issuer `mtls` and `environ` name, in this process (the CA is loaded, or created,
    here); every certificate's leaf is checked to carry the SPIFFE id it was issued for."""
    from proxy.tls.ca import CertificateAuthority
    from proxy.tls.remote_issuer import RemoteIssuer

    issue: Issuer
    if mtls.sentry_address:
        issue = RemoteIssuer.from_env(mtls.sentry_address, mtls.trust_domain, environ)
    else:
        ca = CertificateAuthority.from_env(environ) or CertificateAuthority.init(
            mtls.ca_dir, mtls.trust_domain
        )
        issue = partial(
            _issue,
            ca,
            ttl=timedelta(seconds=float(mtls.workload_cert_ttl)),
            skew=timedelta(seconds=float(mtls.allowed_clock_skew)),
        )
    return partial(_checked, issue)


def given_identity(cert: WorkloadCert) -> WorkloadIdentity:
    """A --concurrency worker's identity: its supervisor's certificate, renewed by the
    supervisor (which installs each renewal); this process never asks the CA."""
    return WorkloadIdentity(cert, _renewed_by_supervisor)


def _renewed_by_supervisor(spiffe_id: SpiffeId) -> WorkloadCert:
    raise WorkloadCertError(f"{spiffe_id}: a worker's certificate is renewed by its supervisor")


def _issue(
    ca: CertificateAuthority, spiffe_id: SpiffeId, *, ttl: timedelta, skew: timedelta
) -> WorkloadCert:
    return ca.issue(spiffe_id, ttl, skew)


def _checked(issue: Issuer, spiffe_id: SpiffeId) -> WorkloadCert:
    from cryptography import x509

    from proxy.tls.svid import spiffe_id_of

    cert = issue(spiffe_id)
    leaf: SpiffeId | None = None
    with contextlib.suppress(ValueError, IndexError):  # not a PEM chain: no identity
        leaf = spiffe_id_of(x509.load_pem_x509_certificates(cert.cert_chain_pem)[0])
    if cert.spiffe_id != spiffe_id or leaf != spiffe_id:
        raise WorkloadCertError(f"certificate for {leaf} cannot serve as {spiffe_id}")
    return cert
