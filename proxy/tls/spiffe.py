"""SPIFFE ids in Dapr's shape (spiffe://<trust domain>/ns/<namespace>/<app id>), parsed strictly."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEME = "spiffe://"
# SPIFFE-ID spec §2.1 and §2.2: trust domains use lowercase letters, digits, '.', '-' and '_';
# path segments add uppercase letters, and may not be '.' or '..'.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# SPIFFE-ID spec §2.3: an id is at most 2048 bytes; a trust domain at most 255 characters.
MAX_ID_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255


def check_trust_domain(trust_domain: str) -> None:
    """Raise ValueError unless ``trust_domain`` is a valid SPIFFE trust domain name."""
    if not trust_domain:
        raise ValueError("SPIFFE trust domain is empty")
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise ValueError(f"SPIFFE trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} characters")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(
            f"SPIFFE trust domain {trust_domain!r} may only contain lowercase letters, "
            "digits, '.', '-' and '_'"
        )


def _check_segment(what: str, value: str) -> None:
    if not value:
        raise ValueError(f"SPIFFE {what} is empty")
    if value in (".", "..") or not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"SPIFFE {what} {value!r} may only contain letters, digits, '.', '-' and '_' "
            "(and may not be '.' or '..')"
        )


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity; built from its parts (validated) or parsed from its URI."""

    trust_domain: str
    namespace: str
    app_id: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        _check_segment("namespace", self.namespace)
        _check_segment("app id", self.app_id)
        if len(str(self).encode()) > MAX_ID_LENGTH:
            raise ValueError(f"SPIFFE id is longer than {MAX_ID_LENGTH} bytes")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Strictly parse ``spiffe://<td>/ns/<ns>/<app>``; ValueError says what is wrong."""
        if not uri.startswith(SCHEME):
            raise ValueError(f"not a SPIFFE id (must start with {SCHEME!r}): {uri!r}")
        if any(c in uri for c in "?#%@") or uri.rstrip() != uri:
            raise ValueError(
                f"SPIFFE id may not contain a query, fragment, user info, percent-encoding "
                f"or whitespace: {uri!r}"
            )
        trust_domain, _, path = uri[len(SCHEME) :].partition("/")
        if ":" in trust_domain:
            raise ValueError(f"SPIFFE trust domain may not carry a port: {uri!r}")
        segments = path.split("/") if path else []
        if len(segments) != 3 or segments[0] != "ns":
            raise ValueError(f"SPIFFE id path must be /ns/<namespace>/<app id>: {uri!r}")
        try:
            return cls(trust_domain, segments[1], segments[2])
        except ValueError as exc:
            raise ValueError(f"{exc}: {uri!r}") from None

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/{self.app_id}"


def spiffe_id_in(peer_cert: Mapping[str, Any]) -> SpiffeId | None:
    """The SPIFFE id of a verified peer certificate in the form ``getpeercert()`` gives: its
    one URI SAN, parsed; None if absent or invalid (proxy/tls/svid.py reads DER and PEM)."""
    uris = [value for kind, value in peer_cert.get("subjectAltName", ()) if kind == "URI"]
    # X509-SVID spec §2: an SVID carries exactly one URI SAN.
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(str(uris[0]))
    except ValueError:
        return None
