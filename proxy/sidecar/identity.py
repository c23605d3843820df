"""The sidecar's workload identity from the embedded CA (or the operator's, via Dapr's env)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial

from config.sidecar import Mtls
from proxy.tls.ca import CertificateAuthority
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload import WorkloadIdentity
from proxy.tls.workload_cert import WorkloadCert


def make_identity(mtls: Mtls, spiffe_id: SpiffeId, environ: Mapping[str, str]) -> WorkloadIdentity:
    """DAPR_TRUST_ANCHORS / DAPR_CERT_CHAIN / DAPR_CERT_KEY when set, else the CA directory,
    created on first start; the first certificate is issued here (blocking, before serving)."""
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
