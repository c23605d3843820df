"""Typed errors of the embedded CA and of workload identity checks."""

from __future__ import annotations


class CaError(Exception):
    """CA material is missing, malformed or inconsistent; the message names the source and why."""


class InvalidCsrError(CaError):
    """A certificate signing request could not be parsed, or its signature does not verify."""


class PeerIdentityError(Exception):
    """A TLS peer has no SPIFFE id, or not the one this side is willing to talk to."""


class WorkloadCertError(Exception):
    """A workload certificate cannot be used: wrong identity, or key and chain do not load."""
