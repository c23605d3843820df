"""The embedded certificate authority: validated root + issuer material that signs X509-SVIDs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from proxy.tls import ca_files
from proxy.tls.builders import build_leaf, new_key
from proxy.tls.ca_files import Sources
from proxy.tls.errors import CaError, InvalidCsrError
from proxy.tls.pem import (
    SigningKey,
    certificate_pem,
    check_is_ca,
    check_key_matches,
    check_valid_at,
    find_signer,
    load_certificates,
    load_private_key,
    private_key_pem,
)
from proxy.tls.spiffe import SpiffeId, check_trust_domain
from proxy.tls.workload_cert import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_WORKLOAD_TTL,
    Clock,
    SignedCert,
    WorkloadCert,
    utc_now,
)

ENV_TRUST_ANCHORS = "DAPR_TRUST_ANCHORS"
ENV_CERT_CHAIN = "DAPR_CERT_CHAIN"
ENV_CERT_KEY = "DAPR_CERT_KEY"

_CSR_KEY_TYPES = (
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    rsa.RSAPublicKey,
)
MIN_RSA_BITS = 2048


def _env_pem(environ: Mapping[str, str], name: str) -> bytes:
    value = environ.get(name, "").strip()
    # Some deployment tools flatten a PEM into one line with literal "\n" escapes.
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\n", "\n")
    return value.encode()


class CertificateAuthority:
    """A root (trust anchors) plus an issuer that signs workload certificates.

    Build one with ``init`` (create or load a data directory), ``load``, ``from_pem`` or
    ``from_env``. Instances are immutable and safe to share between threads.
    """

    __slots__ = ("_clock", "_issuer", "_issuer_key", "_root_key", "_roots", "_sources")

    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        issuer: x509.Certificate,
        issuer_key: SigningKey,
        root_key: SigningKey | None,
        sources: Sources,
        clock: Clock,
    ) -> None:
        self._roots = tuple(roots)
        self._issuer = issuer
        self._issuer_key = issuer_key
        self._root_key = root_key
        self._sources = sources
        self._clock = clock

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        trust_domain: str,
        *,
        clock: Clock = utc_now,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    ) -> CertificateAuthority:
        """Load the CA in ``directory``, creating a root and an issuer there first if missing.

        Blocking (file I/O, an inter-process lock): call it before ``trio.run`` or through
        ``trio.to_thread.run_sync``. Sidecars starting together on one host end with one root.
        """
        check_trust_domain(trust_domain)
        material = ca_files.create_or_read(
            Path(directory), trust_domain, _checked_now(clock), clock_skew
        )
        return cls._validated(*material, clock)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, clock: Clock = utc_now
    ) -> CertificateAuthority:
        """Load existing material from ``directory`` (root.key optional); CaError names the file."""
        return cls._validated(*ca_files.read(Path(directory)), clock)

    @classmethod
    def from_pem(
        cls,
        root_pem: bytes,
        issuer_cert_pem: bytes,
        issuer_key_pem: bytes,
        *,
        clock: Clock = utc_now,
    ) -> CertificateAuthority:
        """Operator-supplied material; ``root_pem`` may hold several trust anchors."""
        sources = Sources("root PEM", "issuer certificate PEM", "issuer key PEM", "root key PEM")
        return cls._validated(root_pem, issuer_cert_pem, issuer_key_pem, None, sources, clock)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, clock: Clock = utc_now
    ) -> CertificateAuthority | None:
        """Dapr's DAPR_TRUST_ANCHORS, DAPR_CERT_CHAIN, DAPR_CERT_KEY; None if none is set."""
        names = (ENV_TRUST_ANCHORS, ENV_CERT_CHAIN, ENV_CERT_KEY)
        anchors, chain, key = (_env_pem(environ, name) for name in names)
        if not (anchors or chain or key):
            return None
        missing = [
            name for name, value in zip(names, (anchors, chain, key), strict=True) if not value
        ]
        if missing:
            raise CaError(f"{', '.join(missing)}: not set (set all of {', '.join(names)} or none)")
        sources = Sources(ENV_TRUST_ANCHORS, ENV_CERT_CHAIN, ENV_CERT_KEY, "root key")
        return cls._validated(anchors, chain, key, None, sources, clock)

    @classmethod
    def _validated(
        cls,
        roots_pem: bytes,
        issuer_pem: bytes,
        issuer_key_pem: bytes,
        root_key_pem: bytes | None,
        sources: Sources,
        clock: Clock,
    ) -> CertificateAuthority:
        now = _checked_now(clock)
        roots = load_certificates(roots_pem, sources.roots)
        for root in roots:
            check_is_ca(root, sources.roots)
        # A chain bundle (issuer first, then its parents) is accepted; the first is the issuer.
        issuer = load_certificates(issuer_pem, sources.issuer_cert)[0]
        issuer_key = load_private_key(issuer_key_pem, sources.issuer_key)
        check_is_ca(issuer, sources.issuer_cert)
        check_key_matches(issuer_key, sources.issuer_key, issuer, sources.issuer_cert)
        signer = find_signer(issuer, sources.issuer_cert, roots, sources.roots)
        check_valid_at(signer, sources.roots, now)
        check_valid_at(issuer, sources.issuer_cert, now)
        root_key = None
        if root_key_pem is not None:
            root_key = load_private_key(root_key_pem, sources.root_key)
            check_key_matches(root_key, sources.root_key, signer, sources.roots)
        return cls(roots, issuer, issuer_key, root_key, sources, clock)

    # -- what it holds ------------------------------------------------------------------------

    @property
    def trust_anchors_pem(self) -> bytes:
        return b"".join(certificate_pem(root) for root in self._roots)

    @property
    def issuer_cert_pem(self) -> bytes:
        return certificate_pem(self._issuer)

    @property
    def issuer_not_after(self) -> datetime:
        """When the issuer expires (Dapr's ``dapr_sentry_issuercert_expiry_timestamp``)."""
        return self._issuer.not_valid_after_utc

    @property
    def has_root_key(self) -> bool:
        return self._root_key is not None

    @property
    def trust_domain(self) -> str | None:
        """The root's Subject O, which a generated root sets to its trust domain."""
        names = self._roots[0].subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(names[0].value) if names else None

    # -- signing ------------------------------------------------------------------------------

    def issue(
        self,
        spiffe_id: SpiffeId,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        dns_names: Sequence[str] = (),
    ) -> WorkloadCert:
        """A new key and an X509-SVID for ``spiffe_id``, valid ``ttl`` (clipped to the issuer)."""
        key = new_key()
        leaf = self._sign(key.public_key(), spiffe_id, ttl, clock_skew, dns_names)
        signed = self._signed(leaf, spiffe_id)
        return WorkloadCert(
            spiffe_id=spiffe_id,
            key_pem=private_key_pem(key),
            cert_chain_pem=signed.cert_chain_pem,
            trust_anchors_pem=signed.trust_anchors_pem,
            not_before=signed.not_before,
            not_after=signed.not_after,
            serial=signed.serial,
        )

    def sign_csr(
        self,
        csr_pem: bytes,
        spiffe_id: SpiffeId,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        dns_names: Sequence[str] = (),
    ) -> SignedCert:
        """Sign a CSR's key for ``spiffe_id``, the caller's *authenticated* identity.

        Only the CSR's public key is used (after checking its signature proves possession of the
        private key); its subject, SANs and requested extensions are ignored.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            public_key = csr.public_key()
        except (ValueError, TypeError) as exc:
            raise InvalidCsrError(
                f"CSR: not a valid PEM certificate signing request: {exc}"
            ) from None
        if not csr.is_signature_valid:
            raise InvalidCsrError("CSR: signature does not verify with the CSR's own public key")
        if not isinstance(public_key, _CSR_KEY_TYPES):
            raise InvalidCsrError(f"CSR: unsupported key type {type(public_key).__name__}")
        if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
            raise InvalidCsrError(f"CSR: RSA key of {public_key.key_size} bits is too small")
        leaf = self._sign(public_key, spiffe_id, ttl, clock_skew, dns_names)
        return self._signed(leaf, spiffe_id)

    def _sign(
        self,
        public_key: CertificatePublicKeyTypes,
        spiffe_id: SpiffeId,
        ttl: timedelta,
        clock_skew: timedelta,
        dns_names: Sequence[str],
    ) -> x509.Certificate:
        if ttl <= timedelta(0):
            raise ValueError(f"workload certificate TTL must be positive, got {ttl}")
        if clock_skew < timedelta(0):
            raise ValueError(f"clock skew allowance must not be negative, got {clock_skew}")
        now = _checked_now(self._clock)
        issuer_end = self._issuer.not_valid_after_utc
        if now >= issuer_end:
            raise CaError(
                f"{self._sources.issuer_cert}: certificate expired at {issuer_end.isoformat()}"
            )
        not_after = min(now + ttl, issuer_end)
        return build_leaf(
            public_key,
            spiffe_id,
            dns_names,
            self._issuer,
            self._issuer_key,
            now - clock_skew,
            not_after,
        )

    def _signed(self, leaf: x509.Certificate, spiffe_id: SpiffeId) -> SignedCert:
        return SignedCert(
            spiffe_id=spiffe_id,
            cert_chain_pem=certificate_pem(leaf) + certificate_pem(self._issuer),
            trust_anchors_pem=self.trust_anchors_pem,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            serial=leaf.serial_number,
        )


def _checked_now(clock: Clock) -> datetime:
    now = clock()
    if now.tzinfo is None:
        raise ValueError("the CA's clock must return timezone-aware datetimes")
    return now
