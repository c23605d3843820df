"""`pubsub.mqtt3`'s metadata, read and checked without importing paho-mqtt."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from config.dapr.component import Component
from filters.pubsub.broker import PubSubError
from filters.state.metadata import ComponentMetadata

__all__ = ["PLAIN_SCHEMES", "TLS_SCHEMES", "MqttSettings", "parse"]

PLAIN_SCHEMES = {"tcp": 1883, "mqtt": 1883}
TLS_SCHEMES = {"ssl": 8883, "tls": 8883, "mqtts": 8883, "tcps": 8883}


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Dapr's `pubsub.mqtt3` metadata, checked (a TLS context made from its certificates)."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    qos: int
    retain: bool
    clean_session: bool


def parse(component: Component) -> MqttSettings:
    """The settings of a `pubsub.mqtt3` Component; PubSubError names a bad metadata value."""
    meta = ComponentMetadata(component, error=PubSubError, kind="pubsub")
    url = meta.text("url", "")
    if not url:
        raise meta.error("url", "required (tcp://host:port or ssl://host:port)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in PLAIN_SCHEMES and scheme not in TLS_SCHEMES:
        raise meta.error(
            "url", f"scheme {parts.scheme!r} is not tcp://, mqtt://, ssl:// or mqtts://"
        )
    try:
        port = parts.port or {**PLAIN_SCHEMES, **TLS_SCHEMES}[scheme]
    except ValueError as exc:
        raise meta.error("url", str(exc)) from None
    if not parts.hostname:
        raise meta.error("url", f"no host in {url!r}")
    qos = meta.integer("qos", 1)
    if qos not in (0, 1, 2):
        raise meta.error("qos", f"expected 0, 1 or 2, got {qos}")
    return MqttSettings(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=_tls_context(meta, scheme in TLS_SCHEMES),
        qos=qos,
        retain=meta.flag("retain"),
        clean_session=meta.flag("cleanSession"),
    )


def _tls_context(meta: ComponentMetadata, enabled: bool) -> ssl.SSLContext | None:
    ca, cert, key = (meta.text(k, "") for k in ("caCert", "clientCert", "clientKey"))
    if not enabled:
        if ca or cert or key:
            raise meta.error("url", "caCert, clientCert and clientKey need an ssl:// url")
        return None
    if bool(cert) != bool(key):
        raise meta.error("clientKey" if cert else "clientCert", "clientCert needs clientKey")
    try:
        context = ssl.create_default_context(cadata=ca or None)
    except (ssl.SSLError, ValueError) as exc:
        raise meta.error("caCert", f"not a PEM certificate: {exc}") from None
    if cert:
        _load_client_certificate(meta, context, cert, key)
    return context


def _load_client_certificate(
    meta: ComponentMetadata, context: ssl.SSLContext, cert: str, key: str
) -> None:
    with tempfile.TemporaryDirectory() as directory:  # ssl reads certificates from files only
        cert_file, key_file = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_file.write_text(cert)
        key_file.write_text(key)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise meta.error("clientCert", f"unusable certificate or key: {exc}") from None
