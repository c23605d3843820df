"""One sidecar's workload identity: current certificate, mTLS contexts, peer checks, rotation."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import trio

from proxy.tls.contexts import add_trust_anchors, load_chain, new_client_context, new_server_context
from proxy.tls.errors import PeerIdentityError, WorkloadCertError
from proxy.tls.spiffe import SpiffeId, spiffe_id_in
from proxy.tls.stream import PeerCertified
from proxy.tls.workload_cert import Clock, WorkloadCert, utc_now

log = logging.getLogger(__name__)

Issuer = Callable[[SpiffeId], WorkloadCert]

# dapr/kit crypto/spiffe: a failed renewal is retried every 10 s, the clock re-read every minute.
RETRY_INTERVAL = 10.0
MAX_CHECK_INTERVAL = 60.0


def check_peer(
    peer_cert: Mapping[str, Any] | None, trust_domain: str, expected: SpiffeId | None = None
) -> SpiffeId:
    """The SPIFFE id in a verified peer certificate (``getpeercert()``), if it is one this side
    accepts."""
    if not peer_cert:
        raise PeerIdentityError("peer presented no certificate")
    peer = spiffe_id_in(peer_cert)
    if peer is None:
        raise PeerIdentityError("peer certificate carries no SPIFFE id (exactly one URI SAN)")
    if peer.trust_domain != trust_domain:
        raise PeerIdentityError(f"peer {peer} is not in trust domain {trust_domain!r}")
    if expected is not None and peer != expected:
        raise PeerIdentityError(f"peer is {peer}, expected {expected}")
    return peer


class WorkloadIdentity:
    """The current certificate of one sidecar and the two TLS contexts that present it.

    ``server_context()`` and ``client_context()`` always return the same two objects; a
    rotation loads the new chain into them, so it applies to new handshakes while established
    connections carry on. Not thread-safe: use it from the trio thread.
    """

    def __init__(
        self,
        cert: WorkloadCert,
        issuer: Issuer,
        *,
        clock: Clock = utc_now,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self._spiffe_id = cert.spiffe_id
        self._issuer = issuer
        self._clock = clock
        self._retry_interval = retry_interval
        self._server = new_server_context(cert.trust_anchors_pem)
        self._client = new_client_context(cert.trust_anchors_pem)
        self._current = cert
        self._install(cert)
        self.rotations = 0
        self.rotation_failures = 0

    @classmethod
    def issue(
        cls,
        spiffe_id: SpiffeId,
        issuer: Issuer,
        *,
        clock: Clock = utc_now,
        retry_interval: float = RETRY_INTERVAL,
    ) -> WorkloadIdentity:
        """Issue the first certificate (blocking: the issuer runs here) and wrap it."""
        return cls(issuer(spiffe_id), issuer, clock=clock, retry_interval=retry_interval)

    @property
    def spiffe_id(self) -> SpiffeId:
        return self._spiffe_id

    @property
    def current(self) -> WorkloadCert:
        return self._current

    def server_context(self) -> ssl.SSLContext:
        """For ``TlsStream(..., server_side=True)``: requires a client certificate."""
        return self._server

    def client_context(self) -> ssl.SSLContext:
        """For outgoing ``TlsStream``s: presents our chain, verifies the server's."""
        return self._client

    def verify_peer(self, stream: PeerCertified, expected: SpiffeId | None = None) -> SpiffeId:
        """The handshaken peer's SPIFFE id; PeerIdentityError unless ours is its trust domain
        and, when ``expected`` is given, it is exactly that id."""
        return check_peer(stream.getpeercert(), self._spiffe_id.trust_domain, expected)

    async def rotate(self) -> None:
        """Issue a new certificate now (in a worker thread) and load it into both contexts."""
        try:
            cert = await trio.to_thread.run_sync(self._issuer, self._spiffe_id)
            self._install(cert)
        except Exception:
            self.rotation_failures += 1
            raise
        self.rotations += 1

    def install(self, cert: WorkloadCert) -> None:
        """Present `cert` from now on: one renewed elsewhere (a --concurrency worker gets its
        supervisor's). WorkloadCertError if it is not for this identity."""
        self._install(cert)

    async def run_rotation(
        self,
        *,
        on_rotated: Callable[[WorkloadCert], None] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Renew at half-life of the current certificate, forever; retry failures every 10 s.
        `on_rotated` is told each new certificate (a supervisor passes it to its workers)."""
        task_status.started()
        while True:
            await self._sleep_until(self._current.half_life)
            try:
                await self.rotate()
            except Exception as exc:
                # The issuer may fail in any way (a full disk, an unreachable CA): keep serving
                # with the current certificate and try again shortly.
                log.warning(
                    "renewing the workload certificate of %s failed (retry in %ss; the current "
                    "one expires %s): %s",
                    self._spiffe_id,
                    self._retry_interval,
                    self._current.not_after.isoformat(),
                    exc,
                )
                await trio.sleep(self._retry_interval)
            else:
                log.info(
                    "rotated the workload certificate of %s (serial %x, valid until %s)",
                    self._spiffe_id,
                    self._current.serial,
                    self._current.not_after.isoformat(),
                )
                if on_rotated is not None:
                    on_rotated(self._current)

    async def _sleep_until(self, when: datetime) -> None:
        while True:
            remaining = (when - self._clock()).total_seconds()
            if remaining <= 0:
                return
            # trio sleeps on a monotonic clock, which a suspended host or a stepped wall clock
            # leaves behind; re-reading the wall clock every minute bounds how late we renew.
            await trio.sleep(min(remaining, MAX_CHECK_INTERVAL))

    def _install(self, cert: WorkloadCert) -> None:
        # The issuers check that the leaf itself names this id (proxy/tls/svid.py): this
        # module stays clear of cryptography, which a sidecar then never imports.
        if cert.spiffe_id != self._spiffe_id:
            raise WorkloadCertError(
                f"certificate for {cert.spiffe_id} cannot serve as {self._spiffe_id}"
            )
        if cert.trust_anchors_pem != self._current.trust_anchors_pem:
            for ctx in (self._server, self._client):
                add_trust_anchors(ctx, cert.trust_anchors_pem)
        # Runs on the trio thread, between handshakes: SSL_CTX is not safe to mutate while
        # another thread creates connections from it, and no handshake sees a half-loaded pair.
        load_chain((self._server, self._client), cert)
        self._current = cert
