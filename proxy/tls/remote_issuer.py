"""The sidecar side of `meshwire ca serve`: a fresh key and CSR per certificate, signed remotely."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from proxy.tls.builders import new_key
from proxy.tls.ca import ENV_TRUST_ANCHORS
from proxy.tls.errors import CaError
from proxy.tls.pem import certificate_pem, find_signer, load_certificates, private_key_pem
from proxy.tls.signing_server import SIGN_PATH, service_id
from proxy.tls.spiffe import SpiffeId
from proxy.tls.svid import peer_spiffe_id, spiffe_id_of
from proxy.tls.workload_cert import WorkloadCert

ENV_TOKEN = "MESHWIRE_CA_TOKEN"
ENV_TOKEN_FILE = "DAPR_SENTRY_TOKEN_FILE"
DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE = 256 * 1024
MAX_CHAIN_DEPTH = 8


# Like urllib's URLError, a failure to get an answer from a remote service is an OSError too.
class SigningServiceError(CaError, OSError):
    """The signing service did not sign for us; the message names its address and the reason."""


# A bad value in the sidecar's own settings; ValueError as the CLI reports those without a trace.
class SigningServiceSettingsError(CaError, ValueError):
    """The signing-service address, trust anchors or token file of this sidecar are unusable."""


class SigningServiceUnreachable(SigningServiceError):
    """No answer: the connection was refused or timed out, or the TLS handshake failed."""


class SigningServiceUntrusted(SigningServiceError):
    """The server's certificate is not from the trust anchors, or names another SPIFFE id."""


class SigningRequestRejected(SigningServiceError):
    """The service answered with an error status (401 token, 403 app not allowed, 400 ...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SigningServiceBadResponse(SigningServiceError):
    """The service answered 200 with something that is not a usable certificate for us."""


def parse_address(address: str) -> tuple[str, int]:
    """``https://host:port`` (or Dapr's bare ``host:port``) → (host, port); ValueError if not."""
    parts = urlsplit(address if "://" in address else f"https://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "https" or not parts.hostname or port is None:
        raise ValueError(f"signing service address must be https://host:port, got {address!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"signing service address takes no path or query: {address!r}")
    return parts.hostname, port


def _env_pem(environ: Mapping[str, str], name: str) -> bytes:
    value = environ.get(name, "").strip()
    if "\n" not in value and "\\n" in value:  # a PEM flattened with literal "\n" escapes
        value = value.replace("\\n", "\n")
    return value.encode()


class RemoteIssuer:
    """An ``Issuer`` (SpiffeId → WorkloadCert) that asks a signing service. Blocking."""

    def __init__(
        self,
        address: str,
        trust_anchors_pem: bytes,
        trust_domain: str,
        *,
        token: str | None = None,
        token_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        anchors_source: str = "trust anchors",
    ) -> None:
        """SigningServiceSettingsError names what is wrong with ``address`` or the anchors."""
        self.address = address
        try:
            self._host, self._port = parse_address(address)
            self._anchors = load_certificates(trust_anchors_pem, anchors_source)
        except (CaError, ValueError) as exc:
            raise SigningServiceSettingsError(str(exc)) from None
        self._anchors_pem = b"".join(certificate_pem(cert) for cert in self._anchors)
        self._trust_domain = trust_domain
        self.server_id = service_id(trust_domain)
        self._token, self._token_file = token, token_file
        self._timeout = timeout
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The service is identified by its SPIFFE id (checked after the handshake), not a name.
        self._context.check_hostname = False
        self._context.load_verify_locations(cadata=self._anchors_pem.decode("ascii"))

    @classmethod
    def from_env(cls, address: str, trust_domain: str, environ: Mapping[str, str]) -> RemoteIssuer:
        """Anchors from DAPR_TRUST_ANCHORS; token from MESHWIRE_CA_TOKEN or the file named by
        DAPR_SENTRY_TOKEN_FILE (read for every request, so it may be rotated)."""
        anchors = _env_pem(environ, ENV_TRUST_ANCHORS)
        if not anchors:
            raise SigningServiceSettingsError(
                f"{ENV_TRUST_ANCHORS}: not set (needed to verify {address})"
            )
        return cls(
            address,
            anchors,
            trust_domain,
            token=environ.get(ENV_TOKEN) or None,
            token_file=environ.get(ENV_TOKEN_FILE) or None,
            anchors_source=ENV_TRUST_ANCHORS,
        )

    def __call__(self, spiffe_id: SpiffeId) -> WorkloadCert:
        key = new_key()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        request = {
            "app_id": spiffe_id.app_id,
            "namespace": spiffe_id.namespace,
            "trust_domain": spiffe_id.trust_domain,
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
            "token": self._read_token(),
        }
        answer = self._post(json.dumps(request).encode(), spiffe_id)
        chain = self._check_chain(answer, spiffe_id, key.public_key())
        leaf = chain[0]
        return WorkloadCert(
            spiffe_id=spiffe_id,
            key_pem=private_key_pem(key),
            cert_chain_pem=b"".join(certificate_pem(cert) for cert in chain),
            trust_anchors_pem=self._anchors_pem,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            serial=leaf.serial_number,
        )

    def _read_token(self) -> str:
        if self._token is not None or self._token_file is None:
            return self._token or ""
        try:
            return Path(self._token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningServiceSettingsError(
                f"{ENV_TOKEN_FILE}={self._token_file}: cannot read: {exc}"
            ) from None

    def _post(self, body: bytes, spiffe_id: SpiffeId) -> dict[str, object]:
        where = self.address
        conn = http.client.HTTPSConnection(
            self._host, self._port, timeout=self._timeout, context=self._context
        )
        try:
            try:
                conn.connect()
            except ssl.SSLCertVerificationError as exc:
                raise SigningServiceUntrusted(
                    f"{where}: server certificate does not verify against the trust anchors "
                    f"({exc.verify_message})"
                ) from None
            except ConnectionRefusedError:
                raise SigningServiceUnreachable(f"{where}: connection refused") from None
            except TimeoutError:
                raise SigningServiceUnreachable(f"{where}: timed out connecting") from None
            except OSError as exc:  # includes ssl.SSLError: a failed handshake
                raise SigningServiceUnreachable(f"{where}: cannot connect: {exc}") from None
            self._check_server(conn.sock)  # before the token leaves this process
            try:
                conn.request("POST", SIGN_PATH, body, {"content-type": "application/json"})
                response = conn.getresponse()
                data = response.read(MAX_RESPONSE + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise SigningServiceUnreachable(f"{where}: request failed: {exc!r}") from None
        finally:
            conn.close()
        status = response.status
        try:
            answer = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if status != 200:
            reasons = {401: "token rejected", 403: f"the token may not sign for {spiffe_id}"}
            message = answer.get("message") if isinstance(answer, dict) else None
            reason = reasons.get(status) or f"request refused: {message or 'no reason given'}"
            raise SigningRequestRejected(f"{where}: {reason} (HTTP {status})", status)
        if len(data) > MAX_RESPONSE or not isinstance(answer, dict):
            raise SigningServiceBadResponse(f"{where}: the answer is not a JSON object")
        return answer

    def _check_server(self, sock: object) -> None:
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        server = peer_spiffe_id(der) if der else None
        if server != self.server_id:
            raise SigningServiceUntrusted(
                f"{self.address}: server is {server or 'without a SPIFFE id'}, "
                f"expected {self.server_id}"
            )

    def _check_chain(
        self,
        answer: dict[str, object],
        spiffe_id: SpiffeId,
        public_key: CertificatePublicKeyTypes,
    ) -> list[x509.Certificate]:
        where = self.address
        pem = answer.get("workload_certificate")
        try:
            chain = x509.load_pem_x509_certificates(pem.encode() if isinstance(pem, str) else b"")
        except ValueError as exc:
            raise SigningServiceBadResponse(f"{where}: workload_certificate: {exc}") from None
        if not chain:
            raise SigningServiceBadResponse(f"{where}: workload_certificate holds no certificate")
        leaf = chain[0]
        if _public_der(leaf.public_key()) != _public_der(public_key):
            raise SigningServiceBadResponse(f"{where}: the certificate is not for our key")
        if spiffe_id_of(leaf) != spiffe_id:
            raise SigningServiceBadResponse(
                f"{where}: the certificate is for {spiffe_id_of(leaf)}, not {spiffe_id}"
            )
        _check_path(chain, self._anchors, where)
        return chain


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_path(
    chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], where: str
) -> None:
    """The leaf leads, through the chain's intermediates, to one of our trust anchors."""
    current = chain[0]
    for _ in range(MAX_CHAIN_DEPTH):
        try:
            find_signer(current, "certificate", anchors, "trust anchors")
        except CaError:
            pass
        else:
            return
        try:
            current = find_signer(current, "certificate", chain[1:], "chain")
        except CaError:
            break
    raise SigningServiceBadResponse(
        f"{where}: the returned chain does not lead to the trust anchors ({ENV_TRUST_ANCHORS})"
    )
