"""The `accessControl` section of a Dapr Configuration: who may invoke which operations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.dapr.fields import Fields
from config.walk import child

__all__ = ["AccessControl", "Action", "AppPolicy", "Operation", "parse_access_control"]

Action = Literal["allow", "deny"]
DEFAULT_TRUST_DOMAIN = "public"
_ACTIONS: dict[str, Action] = {"allow": "allow", "deny": "deny"}


@dataclass(frozen=True, slots=True)
class Operation:
    """A rule for one operation pattern: `*` is one path segment, `**` any number of them."""

    name: str  # as written, with a leading "/" added
    http_verbs: tuple[str, ...]  # upper case; "*" is any verb; unused for gRPC calls
    action: Action


@dataclass(frozen=True, slots=True)
class AppPolicy:
    """Rules for callers with this app id, in this namespace and trust domain."""

    app_id: str
    default_action: Action | None  # None: the global default applies
    trust_domain: str
    namespace: str
    operations: tuple[Operation, ...]


@dataclass(frozen=True, slots=True)
class AccessControl:
    default_action: Action
    trust_domain: str  # this app's own trust domain (its SPIFFE identity)
    policies: tuple[AppPolicy, ...]

    def policy_for(self, app_id: str, namespace: str) -> AppPolicy | None:
        """The policy for callers `app_id` in `namespace` (policies are keyed by both)."""
        for policy in self.policies:
            if policy.app_id == app_id and policy.namespace == namespace:
                return policy
        return None


def _action(raw: dict[str, object], key: str, path: str, fields: Fields) -> Action | None:
    return _ACTIONS.get(fields.choice(raw, key, path, tuple(_ACTIONS), ""))


def parse_access_control(spec: dict[str, object], fields: Fields) -> AccessControl | None:
    """The section's rules, or None when it is absent or empty (then every caller is allowed).

    As in daprd: with app policies but no global defaultAction the default is deny; an app
    policy must name its appId, trustDomain and namespace.
    """
    path = "$.spec.accessControl"
    raw = fields.section(spec, "accessControl", "$.spec")
    fields.known_keys(raw, path, ("defaultAction", "trustDomain", "policies"))
    items = fields.items(raw, "policies", path)
    default = _action(raw, "defaultAction", path, fields)
    trust_domain = fields.text(raw, "trustDomain", path)
    if default is None and not trust_domain and not items:
        return None
    policies: list[AppPolicy] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        where = child(child(path, "policies"), i)
        policy = _policy(fields.as_mapping(item, where), where, fields)
        key = (policy.app_id, policy.namespace)
        if key in seen:
            fields.report(where, f"a second policy for app {key[0]!r} in namespace {key[1]!r}")
        seen.add(key)
        policies.append(policy)
    if default is None:
        default = "deny" if policies else "allow"
    return AccessControl(default, trust_domain or DEFAULT_TRUST_DOMAIN, tuple(policies))


def _policy(raw: dict[str, object], path: str, fields: Fields) -> AppPolicy:
    keys = ("appId", "defaultAction", "trustDomain", "namespace", "operations")
    fields.known_keys(raw, path, keys)
    operations: list[Operation] = []
    for i, item in enumerate(fields.items(raw, "operations", path)):
        where = child(child(path, "operations"), i)
        operation = fields.as_mapping(item, where)
        fields.known_keys(operation, where, ("name", "httpVerb", "action"))
        name = fields.required_text(operation, "name", where)
        verbs = tuple(verb.upper() for verb in fields.strings(operation, "httpVerb", where))
        action = _action(operation, "action", where, fields)
        if "action" not in operation:
            # daprd treats a missing action as deny while its docs say allow: make it explicit.
            fields.report(child(where, "action"), "missing required field 'action' (allow or deny)")
        operations.append(Operation("/" + name.lstrip("/"), verbs, action or "deny"))
    return AppPolicy(
        app_id=fields.required_text(raw, "appId", path),
        default_action=_action(raw, "defaultAction", path, fields),
        trust_domain=fields.required_text(raw, "trustDomain", path),
        namespace=fields.required_text(raw, "namespace", path),
        operations=tuple(operations),
    )
