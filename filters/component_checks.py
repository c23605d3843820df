"""What start-up checks of Components before connecting anywhere, for `meshwire validate`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from config.dapr.component import Component
from config.dapr.fields import scopes_overlap
from filters.backends import BackendKind, ComponentInitError
from filters.pubsub.registry import BROKERS
from filters.state.keys import KEY_PREFIX, IllegalKey, prefix_for
from filters.state.registry import ACTOR_FLAG, STATE_STORES, is_actor_store

__all__ = ["ComponentIssue", "check_components"]

# The building blocks meshwire serves; Components of other categories are loaded and listed
# (/v1.0/metadata) but nothing opens them, so start-up checks nothing more about them.
KINDS: dict[str, BackendKind] = {"state": STATE_STORES, "pubsub": BROKERS}
# How ComponentMetadata words a refused entry: "<kind> <name>: metadata <key>: <reason>".
_METADATA = re.compile(r"^.*?: metadata (?P<key>[^:]+): (?P<reason>.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ComponentIssue:
    """Why start-up would stop at `component`: a problem with its `field`, "type" or
    "metadata", and the metadata entry at fault, if known. Not `fatal`: the Component has
    ignoreErrors, so start-up leaves it out with a warning instead."""

    component: Component
    field: str
    metadata_key: str | None
    message: str
    fatal: bool = True


def check_components(components: Sequence[Component], data_dir: Path) -> list[ComponentIssue]:
    """Every issue start-up would meet before connecting: an unknown type, metadata the backend
    refuses, a bad keyPrefix, two actor state stores for one app. A backend on a client library
    has its metadata read by its light check (the library is not imported); the others are
    constructed (never initialised), and `data_dir` stands in for the sidecar's, as some create
    it."""
    issues: list[ComponentIssue] = []
    for component in components:
        kind = KINDS.get(component.category)
        if kind is None:
            continue
        fatal = not component.ignore_errors
        if component.type not in kind.types:
            known = ", ".join(sorted(kind.types))
            message = f"unknown {kind.label} type {component.type!r}; one of {known}"
            issues.append(ComponentIssue(component, "type", None, message, fatal))
            continue
        try:
            kind.check(component, data_dir)
            if kind is STATE_STORES:
                prefix_for(component.metadata, component.name, "app", component.namespace)
        except IllegalKey as exc:
            issues.append(ComponentIssue(component, "metadata", KEY_PREFIX, str(exc), fatal))
        except ComponentInitError as exc:
            issues.append(_metadata_issue(component, str(exc), fatal))
    issues.extend(_actor_stores(components))
    return issues


def _metadata_issue(component: Component, message: str, fatal: bool) -> ComponentIssue:
    found = _METADATA.match(message)
    if found is None:
        return ComponentIssue(component, "metadata", None, message, fatal)
    return ComponentIssue(component, "metadata", found["key"], found["reason"], fatal)


def _actor_stores(components: Sequence[Component]) -> list[ComponentIssue]:
    """One state store per app may set actorStateStore: true (ignoreErrors or not)."""
    issues: list[ComponentIssue] = []
    actors = [c for c in components if c.category == "state" and is_actor_store(c)]
    for i, component in enumerate(actors):
        other = next(
            (
                earlier
                for earlier in actors[:i]
                if earlier.namespace == component.namespace
                and scopes_overlap(earlier.scopes, component.scopes)
            ),
            None,
        )
        if other is not None:
            message = f"only one state store may set {ACTOR_FLAG}: true; {other.name!r} does too"
            issues.append(ComponentIssue(component, "metadata", ACTOR_FLAG, message))
    return issues
