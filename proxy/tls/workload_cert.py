"""What the CA hands out: a signed workload certificate chain (and its key); shared defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from proxy.tls.spiffe import SpiffeId

# Dapr's defaults (Configuration spec.mtls): workloadCertTTL 24h, allowedClockSkew 15m.
DEFAULT_WORKLOAD_TTL = timedelta(hours=24)
DEFAULT_CLOCK_SKEW = timedelta(minutes=15)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, timezone-aware: the default ``Clock`` everywhere in proxy.tls."""
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedCert:
    """A certificate chain for one SPIFFE id, without the private key (the CSR's owner has it)."""

    spiffe_id: SpiffeId
    cert_chain_pem: bytes = field(repr=False)  # leaf, then the issuer
    trust_anchors_pem: bytes = field(repr=False)  # the root(s) peers verify against
    not_before: datetime
    not_after: datetime
    serial: int

    @property
    def half_life(self) -> datetime:
        """When to renew: halfway through the validity window (as Dapr does)."""
        return self.not_before + (self.not_after - self.not_before) / 2


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadCert(SignedCert):
    """A signed chain and the PEM (PKCS#8) private key of its leaf."""

    key_pem: bytes = field(repr=False)
