"""Dapr `Component` resources (dapr.io/v1alpha1): type, version, metadata and secret references."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from config.dapr.fields import Fields, ResourceMeta, stringify
from config.walk import child

__all__ = ["CATEGORIES", "Component", "SecretRef", "parse_component", "parse_metadata_items"]

CATEGORIES = (
    "bindings",
    "configuration",
    "conversation",
    "crypto",
    "lock",
    "middleware",
    "nameresolution",
    "pubsub",
    "secretstores",
    "state",
    "workflow",
)
DEFAULT_INIT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A value to fetch from the resource's secret store: secret `name`, entry `key`."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    namespace: str
    type: str  # "<category>.<kind>", e.g. state.redis
    version: str
    init_timeout: float  # seconds
    ignore_errors: bool
    metadata: dict[str, str]  # plain and envRef values, as strings
    secret_refs: dict[str, SecretRef]  # metadata names whose value lives in a secret store
    scopes: tuple[str, ...]
    secret_store: str | None = None  # auth.secretStore: where secret_refs are resolved

    @property
    def category(self) -> str:
        return self.type.partition(".")[0]


def parse_metadata_items(
    items: list[object], path: str, fields: Fields, environ: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, SecretRef]]:
    """A `[{name, value | secretKeyRef | envRef}]` list as plain values and secret references."""
    values: dict[str, str] = {}
    secrets: dict[str, SecretRef] = {}
    for i, item in enumerate(items):
        where = child(path, i)
        raw = fields.as_mapping(item, where)
        fields.known_keys(raw, where, ("name", "value", "secretKeyRef", "envRef"))
        name = fields.required_text(raw, "name", where)
        sources = [key for key in ("value", "secretKeyRef", "envRef") if raw.get(key) is not None]
        if len(sources) > 1:
            fields.report(where, f"set only one of value, secretKeyRef, envRef; got {sources}")
        if name in values or name in secrets:
            fields.report(child(where, "name"), f"metadata {name!r} is given more than once")
        if "secretKeyRef" in sources:
            ref = fields.section(raw, "secretKeyRef", where)
            ref_path = child(where, "secretKeyRef")
            fields.known_keys(ref, ref_path, ("name", "key"))
            secret = fields.required_text(ref, "name", ref_path)
            # daprd looks up the entry named like the secret when no key is given.
            secrets[name] = SecretRef(secret, fields.text(ref, "key", ref_path) or secret)
        elif "envRef" in sources:
            # daprd reads the variable from its own environment; an unset one is "".
            values[name] = environ.get(fields.text(raw, "envRef", where), "")
        else:
            value = raw.get("value")
            if isinstance(value, dict | list):
                fields.report(child(where, "value"), "expected a scalar value")
            values[name] = stringify(value)
    return values, secrets


def parse_component(
    doc: dict[str, object],
    spec: dict[str, object],
    meta: ResourceMeta,
    fields: Fields,
    environ: Mapping[str, str],
) -> Component:
    """The Component in `doc` (whose `spec` is given); problems go to `fields`."""
    keys = ("type", "version", "initTimeout", "ignoreErrors", "metadata")
    fields.known_keys(spec, "$.spec", keys)
    type_ = fields.required_text(spec, "type", "$.spec")
    category, dot, rest = type_.partition(".")
    if type_ and (not dot or not rest):
        fields.report(
            "$.spec.type", f"expected <category>.<kind> such as state.redis, got {type_!r}"
        )
    elif type_ and category not in CATEGORIES:
        known = ", ".join(CATEGORIES)
        fields.report("$.spec.type", f"unknown component category {category!r}; one of {known}")
    version = fields.required_text(spec, "version", "$.spec")
    items = fields.items(spec, "metadata", "$.spec")
    metadata, secret_refs = parse_metadata_items(items, "$.spec.metadata", fields, environ)
    auth = fields.section(doc, "auth", "$")
    # daprd decodes JSON case-insensitively; its docs spell this key `secretstore`.
    fields.known_keys(auth, "$.auth", ("secretStore", "secretstore"))
    secret_store = fields.text(auth, "secretStore", "$.auth") or fields.text(
        auth, "secretstore", "$.auth"
    )
    return Component(
        name=meta.name,
        namespace=meta.namespace,
        type=type_,
        version=version,
        init_timeout=fields.duration(spec, "initTimeout", "$.spec", DEFAULT_INIT_TIMEOUT),
        ignore_errors=fields.flag(spec, "ignoreErrors", "$.spec", False),
        metadata=metadata,
        secret_refs=secret_refs,
        scopes=meta.scopes,
        secret_store=secret_store or None,
    )
