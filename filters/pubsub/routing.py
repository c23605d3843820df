"""Subscription routes: CEL `match` rules over the CloudEvent, tried in order, then the default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filters.pubsub.cel import CelProgram

__all__ = ["CompiledRule", "RouteError", "Routes", "compile_rule"]


class RouteError(ValueError):
    """A rule that does not compile, or does not evaluate to a boolean."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    match: str
    path: str
    program: CelProgram | None  # None: the empty match, which always holds


def compile_rule(match: str, path: str) -> CompiledRule:
    """The CEL engine is imported here, by the first rule with a `match`: a sidecar whose
    subscriptions have none (most) never loads it."""
    if not match.strip():
        return CompiledRule(match, path, None)
    from filters.pubsub.cel import compile_match

    return CompiledRule(match, path, compile_match(match))


@dataclass(frozen=True, slots=True)
class Routes:
    """Rules in order (the first that holds wins), then `default`; None: the event is dropped."""

    rules: Sequence[CompiledRule]
    default: str | None

    def choose(self, event: Mapping[str, object]) -> str | None:
        activation: dict[str, Any] | None = None
        for rule in self.rules:
            program = rule.program
            if program is None:
                return rule.path
            if activation is None:
                activation = program.activation(event)
            if program.holds(activation):
                return rule.path
        return self.default
