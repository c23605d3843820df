"""ssl.SSLContext objects for sidecar-to-sidecar mutual TLS, and loading a chain into them."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

from proxy.tls.errors import WorkloadCertError
from proxy.tls.files import PRIVATE_FILE_MODE
from proxy.tls.workload_cert import WorkloadCert

ALPN_PROTOCOLS = ["h2"]


def _common(ctx: ssl.SSLContext, trust_anchors_pem: bytes) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    add_trust_anchors(ctx, trust_anchors_pem)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    return ctx


def add_trust_anchors(ctx: ssl.SSLContext, trust_anchors_pem: bytes) -> None:
    """Trust these roots too (OpenSSL cannot drop a root from a live context's store)."""
    try:
        ctx.load_verify_locations(cadata=trust_anchors_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise WorkloadCertError(f"trust anchors do not load: {exc}") from None


def new_server_context(trust_anchors_pem: bytes) -> ssl.SSLContext:
    """TLS >= 1.2, ALPN h2; every client must present a chain that verifies to the anchors."""
    return _common(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), trust_anchors_pem)


def new_client_context(trust_anchors_pem: bytes) -> ssl.SSLContext:
    """TLS >= 1.2, ALPN h2; the server chain must verify, its SPIFFE id is checked afterwards."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Workload certificates name a SPIFFE id, not a host: verify_peer checks identity instead.
    ctx.check_hostname = False
    return _common(ctx, trust_anchors_pem)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def load_chain(contexts: Iterable[ssl.SSLContext], cert: WorkloadCert) -> None:
    """Make ``cert`` the chain and key that ``contexts`` present in their next handshakes.

    ``load_cert_chain`` only reads files, so key and chain pass through a private (0700)
    temporary directory that is removed as soon as they are loaded. A scratch context is loaded
    first: a chain that does not match its key fails there and leaves ``contexts`` untouched.
    """
    with tempfile.TemporaryDirectory(prefix="meshwire-svid-") as temp:
        chain_path, key_path = Path(temp) / "chain.pem", Path(temp) / "key.pem"
        _write_private(chain_path, cert.cert_chain_pem)
        _write_private(key_path, cert.key_pem)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(chain_path, key_path)
        except ssl.SSLError as exc:
            raise WorkloadCertError(
                f"certificate chain and key for {cert.spiffe_id}: {exc}"
            ) from None
        for ctx in contexts:
            ctx.load_cert_chain(chain_path, key_path)
