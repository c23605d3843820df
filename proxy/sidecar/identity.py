"""The sidecar's workload identity: from a signing service, the operator's CA or the local one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial

from config.sidecar import Mtls
from proxy.tls.ca import CertificateAuthority
from proxy.tls.errors import WorkloadCertError
from proxy.tls.remote_issuer import RemoteIssuer
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload import Issuer, WorkloadIdentity
from proxy.tls.workload_cert import WorkloadCert


def make_identity(mtls: Mtls, spiffe_id: SpiffeId, environ: Mapping[str, str]) -> WorkloadIdentity:
    """With a sentry address, certificates signed by `meshwire ca serve` there; else
    DAPR_TRUST_ANCHORS / DAPR_CERT_CHAIN / DAPR_CERT_KEY when set, else the CA directory,
    created on first start. The first certificate is issued here (blocking, before serving);
    CaError (and, from the signing service, SigningServiceError) says why it could not be."""
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
    return WorkloadIdentity.issue(spiffe_id, issue)


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
