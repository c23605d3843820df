"""Dapr `HTTPEndpoint` resources: non-Dapr services callable through /v1.0/invoke/<name>/."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from config.dapr.component import SecretRef, parse_metadata_items
from config.dapr.fields import Fields, ResourceMeta
from config.walk import child

__all__ = ["ClientTls", "HTTPEndpoint", "TlsItem", "parse_http_endpoint"]

_TLS_ITEMS = {"rootCA": "root_ca", "certificate": "certificate", "privateKey": "private_key"}
RENEGOTIATION = ("Never", "OnceAsClient", "FreelyAsClient")


@dataclass(frozen=True, slots=True)
class TlsItem:
    """PEM given inline (`value`) or kept in a secret store (`secret_ref`)."""

    value: str | None = None
    secret_ref: SecretRef | None = None


@dataclass(frozen=True, slots=True)
class ClientTls:
    root_ca: TlsItem | None = None
    certificate: TlsItem | None = None
    private_key: TlsItem | None = None
    renegotiation: str = "Never"


@dataclass(frozen=True, slots=True)
class HTTPEndpoint:
    name: str
    namespace: str
    base_url: str
    headers: dict[str, str]
    header_secret_refs: dict[str, SecretRef]
    client_tls: ClientTls | None
    scopes: tuple[str, ...]
    secret_store: str | None = None


def parse_http_endpoint(
    doc: dict[str, object],
    spec: dict[str, object],
    meta: ResourceMeta,
    fields: Fields,
    environ: Mapping[str, str],
) -> HTTPEndpoint:
    """The HTTPEndpoint in `doc` (whose `spec` is given); problems go to `fields`."""
    fields.known_keys(spec, "$.spec", ("baseUrl", "headers", "clientTLS"))
    base_url = fields.required_text(spec, "baseUrl", "$.spec")
    parts = urlsplit(base_url)
    if base_url and (parts.scheme not in ("http", "https") or not parts.netloc):
        fields.report("$.spec.baseUrl", f"expected an http:// or https:// URL, got {base_url!r}")
    items = fields.items(spec, "headers", "$.spec")
    headers, header_secrets = parse_metadata_items(items, "$.spec.headers", fields, environ)
    auth = fields.section(doc, "auth", "$")
    fields.known_keys(auth, "$.auth", ("secretStore", "secretstore"))
    store = fields.text(auth, "secretStore", "$.auth") or fields.text(auth, "secretstore", "$.auth")
    return HTTPEndpoint(
        name=meta.name,
        namespace=meta.namespace,
        base_url=base_url,
        headers=headers,
        header_secret_refs=header_secrets,
        client_tls=_client_tls(spec, fields),
        scopes=meta.scopes,
        secret_store=store or None,
    )


def _client_tls(spec: dict[str, object], fields: Fields) -> ClientTls | None:
    if spec.get("clientTLS") is None:
        return None
    raw = fields.section(spec, "clientTLS", "$.spec")
    where = "$.spec.clientTLS"
    fields.known_keys(raw, where, (*_TLS_ITEMS, "renegotiation"))
    items: dict[str, TlsItem | None] = {}
    for key, attribute in _TLS_ITEMS.items():
        if raw.get(key) is None:
            items[attribute] = None
            continue
        item_path = child(where, key)
        item = fields.section(raw, key, where)
        fields.known_keys(item, item_path, ("value", "secretKeyRef"))
        ref: SecretRef | None = None
        if item.get("secretKeyRef") is not None:
            ref_raw = fields.section(item, "secretKeyRef", item_path)
            ref_path = child(item_path, "secretKeyRef")
            secret = fields.required_text(ref_raw, "name", ref_path)
            ref = SecretRef(secret, fields.text(ref_raw, "key", ref_path) or secret)
        value = fields.text(item, "value", item_path) or None
        if (value is None) == (ref is None):
            fields.report(item_path, "give exactly one of value, secretKeyRef")
        items[attribute] = TlsItem(value, ref)
    return ClientTls(
        root_ca=items["root_ca"],
        certificate=items["certificate"],
        private_key=items["private_key"],
        renegotiation=fields.choice(raw, "renegotiation", where, RENEGOTIATION, "Never"),
    )
