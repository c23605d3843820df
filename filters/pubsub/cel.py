"""CEL programs for subscription `match` rules (cel-python), imported only when a rule has one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel

from filters.pubsub.routing import RouteError

__all__ = ["CelProgram", "compile_match"]

_env = celpy.Environment()


@dataclass(frozen=True, slots=True)
class CelProgram:
    """One compiled `match` expression, evaluated over `event` (the CloudEvent)."""

    match: str
    runner: Any  # celpy Runner

    @staticmethod
    def activation(event: Mapping[str, object]) -> dict[str, Any]:
        """The variables every rule of a route sees: built once per event."""
        return {"event": json_to_cel(dict(event))}

    def holds(self, activation: Mapping[str, Any]) -> bool:
        result = self.runner.evaluate(activation)
        if not isinstance(result, celtypes.BoolType):
            raise RouteError(f"the CEL expression {self.match!r} did not evaluate to a boolean")
        return bool(result)


def compile_match(match: str) -> CelProgram:
    try:
        runner = _env.program(_env.compile(match))
    except Exception as exc:  # celpy raises its own parse and compile errors
        raise RouteError(f"invalid CEL expression {match!r}: {exc}") from None
    return CelProgram(match, runner)
