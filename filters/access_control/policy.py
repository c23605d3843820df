"""Dapr's service-invocation access-control decision, as a pure function of ACL, caller and call.

Rules (Dapr docs "Apply access control list configuration for service invocation", and
daprd's pkg/acl):

1. No accessControl section: every call is allowed.
2. A caller without a verified identity (no mTLS SPIFFE id) gets the global default action.
3. The caller's policy is looked up by app id and namespace; none found, or a trust domain
   that differs from the policy's, means the global default action.
4. Otherwise the most specific rule wins: an operation rule whose pattern matches the path and
   whose verbs name the request's verb (or "*") > the app policy's defaultAction > the global
   defaultAction. For gRPC calls (verb "") a matching operation's action applies as is.

Operation patterns: `*` matches within one path segment, a `**` segment any number of
segments. HTTP paths match case-insensitively, gRPC method names exactly. The first operation
whose pattern and verbs both match wins. (daprd stops at the first operation whose pattern
matches and ignores a later one for the same path with other verbs; that is its trie's quirk,
not a documented rule, and surprises users who split verbs over two entries.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from config.dapr.access_control import AccessControl, Action, AppPolicy, Operation

__all__ = ["CallerIdentity", "Decision", "decide", "normalize_path", "operation_matches"]

_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who is calling, from the SPIFFE id spiffe://<trust_domain>/ns/<namespace>/<app_id>."""

    app_id: str
    namespace: str
    trust_domain: str


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # for logs and the 403 message
    level: Literal["none", "global", "app", "operation"]  # which rule decided (for metrics)


def normalize_path(path: str) -> str:
    """The operation path as the ACL sees it: no query, unreserved %-escapes decoded, a
    leading "/", no empty segments, and "." / ".." resolved (RFC 3986 section 5.2.4) so a
    traversal cannot step out of a matched prefix."""
    path = path.split("?", 1)[0].split("#", 1)[0]

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED_CHARS else match.group(0).upper()

    segments: list[str] = []
    for segment in _UNRESERVED.sub(decode, path).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def _pattern(name: str) -> str:
    parts: list[str] = []
    for segment in name.strip("/").split("/"):
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        elif segment:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in segment.split("*")))
    return "".join(parts) or "/"


def operation_matches(operation: Operation, path: str, *, case_sensitive: bool = False) -> bool:
    """Whether the operation's name pattern covers the (already normalised) path."""
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.fullmatch(_pattern(operation.name), path, flags) is not None


def _allowed(action: Action) -> bool:
    return action == "allow"


def decide(
    acl: AccessControl | None, caller: CallerIdentity | None, verb: str, path: str
) -> Decision:
    """May `caller` invoke `verb path` on this app? `verb` is "" for a gRPC call."""
    if acl is None:
        return Decision(True, "no access control policy is configured", "none")
    global_default = acl.default_action
    if caller is None or not caller.app_id:
        reason = f"caller has no verified identity; global default action is {global_default}"
        return Decision(_allowed(global_default), reason, "global")
    who = f"app {caller.app_id!r} (namespace {caller.namespace!r})"
    policy = acl.policy_for(caller.app_id, caller.namespace)
    if policy is None:
        reason = f"no policy for {who}; global default action is {global_default}"
        return Decision(_allowed(global_default), reason, "global")
    if policy.trust_domain != caller.trust_domain:
        reason = (
            f"trust domain {caller.trust_domain!r} of {who} is not the policy's "
            f"{policy.trust_domain!r}; global default action is {global_default}"
        )
        return Decision(_allowed(global_default), reason, "global")
    return _decide_for_policy(policy, global_default, who, verb.upper(), normalize_path(path))


def _decide_for_policy(
    policy: AppPolicy, global_default: Action, who: str, verb: str, path: str
) -> Decision:
    grpc = verb == ""
    for operation in policy.operations:
        if not operation_matches(operation, path, case_sensitive=grpc):
            continue
        if grpc or verb in operation.http_verbs or "*" in operation.http_verbs:
            call = path if grpc else f"{verb} {path}"
            verdict = "allows" if operation.action == "allow" else "denies"
            reason = f"operation {operation.name!r} {verdict} {call} for {who}"
            return Decision(_allowed(operation.action), reason, "operation")
    if policy.default_action is not None:
        reason = f"policy default action for {who} is {policy.default_action}"
        return Decision(_allowed(policy.default_action), reason, "app")
    reason = f"policy for {who} has no default action; global default action is {global_default}"
    return Decision(_allowed(global_default), reason, "global")
