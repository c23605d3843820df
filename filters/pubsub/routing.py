"""Subscription routes: CEL `match` rules over the CloudEvent, tried in order, then the default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel

__all__ = ["CompiledRule", "RouteError", "Routes", "compile_rule"]

_env = celpy.Environment()


class RouteError(ValueError):
    """A rule that does not compile, or does not evaluate to a boolean."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    match: str
    path: str
    program: Any  # celpy Runner; None: the empty match, which always holds


def compile_rule(match: str, path: str) -> CompiledRule:
    if not match.strip():
        return CompiledRule(match, path, None)
    try:
        program = _env.program(_env.compile(match))
    except Exception as exc:  # celpy raises its own parse and compile errors
        raise RouteError(f"invalid CEL expression {match!r}: {exc}") from None
    return CompiledRule(match, path, program)


@dataclass(frozen=True, slots=True)
class Routes:
    """Rules in order (the first that holds wins), then `default`; None: the event is dropped."""

    rules: Sequence[CompiledRule]
    default: str | None

    def choose(self, event: Mapping[str, object]) -> str | None:
        if self.rules:
            activation = {"event": json_to_cel(dict(event))}
            for rule in self.rules:
                if rule.program is None:
                    return rule.path
                result = rule.program.evaluate(activation)
                if not isinstance(result, celtypes.BoolType):
                    raise RouteError(
                        f"the CEL expression {rule.match!r} did not evaluate to a boolean"
                    )
                if bool(result):
                    return rule.path
        return self.default
