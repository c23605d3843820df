"""The sidecar's workload identity: from a signing service, the operator's CA or the local one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial

from config.sidecar import Mtls
from proxy.tls.ca import CertificateAuthority
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


def _issue(
    ca: CertificateAuthority, spiffe_id: SpiffeId, *, ttl: timedelta, skew: timedelta
) -> WorkloadCert:
    return ca.issue(spiffe_id, ttl, skew)
