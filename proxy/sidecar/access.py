"""The callee's access check: Dapr's accessControl policies on the caller's SPIFFE id."""

from __future__ import annotations

from pathlib import Path

from config.dapr.access_control import AccessControl
from config.dapr.app_configuration import load_configuration
from filters.access_control.policy import CallerIdentity, Decision, decide
from proxy.tls.spiffe import SpiffeId


class AccessPolicy:
    """`accessControl` of the sidecar's Dapr Configuration; no configuration allows everyone."""

    def __init__(self, acl: AccessControl | None) -> None:
        self.acl = acl

    @classmethod
    def from_file(cls, path: str | None, namespace: str) -> AccessPolicy:
        if path is None:
            return cls(None)
        return cls(load_configuration(Path(path), namespace=namespace).access_control)

    def decide(self, caller: SpiffeId, verb: str, path: bytes) -> Decision:
        identity = CallerIdentity(caller.app_id, caller.namespace, caller.trust_domain)
        return decide(self.acl, identity, verb, path.decode("latin-1"))
