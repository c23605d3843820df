"""Circuit-breaker trip conditions: the small CEL subset Dapr documents, parsed and evaluable.

Grammar (anything else is refused with the offending position):

    expr       := and ( "||" and )*
    and        := primary ( "&&" primary )*
    primary    := "(" expr ")" | comparison
    comparison := operand ( ">" | ">=" | "<" | "<=" | "==" | "!=" ) operand
    operand    := variable | integer      (at least one side a variable)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

__all__ = [
    "AllOf",
    "AnyOf",
    "Comparison",
    "Counts",
    "TripPredicate",
    "TripSyntaxError",
    "parse_trip",
]


@dataclass(frozen=True, slots=True)
class Counts:
    """The circuit breaker's counters, named after Dapr's CEL variables."""

    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0


VARIABLES = {
    "requests": "requests",
    "totalSuccesses": "total_successes",
    "totalFailures": "total_failures",
    "consecutiveSuccesses": "consecutive_successes",
    "consecutiveFailures": "consecutive_failures",
}
_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(>=|<=|==|!=|&&|\|\||[<>()]))")


class TripSyntaxError(ValueError):
    """A trip expression outside the supported subset."""


@dataclass(frozen=True, slots=True)
class Comparison:
    left: str | int  # a CEL variable name or an integer
    operator: str
    right: str | int

    def evaluate(self, counts: Counts) -> bool:
        return _OPERATORS[self.operator](_value(self.left, counts), _value(self.right, counts))


@dataclass(frozen=True, slots=True)
class AllOf:
    operands: tuple[Expression, ...]

    def evaluate(self, counts: Counts) -> bool:
        return all(item.evaluate(counts) for item in self.operands)


@dataclass(frozen=True, slots=True)
class AnyOf:
    operands: tuple[Expression, ...]

    def evaluate(self, counts: Counts) -> bool:
        return any(item.evaluate(counts) for item in self.operands)


Expression = Comparison | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class TripPredicate:
    """A parsed trip condition; call it with the breaker's counts."""

    source: str
    expression: Expression

    def __call__(self, counts: Counts) -> bool:
        return self.expression.evaluate(counts)


def _value(operand: str | int, counts: Counts) -> int:
    if isinstance(operand, int):
        return operand
    value: int = getattr(counts, VARIABLES[operand])
    return value


def parse_trip(source: str) -> TripPredicate:
    """Parse a trip expression such as "consecutiveFailures >= 5 || requests > 100"."""
    return TripPredicate(source, _Parser(source).parse())


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens: list[tuple[str, int]] = []  # (token, column)
        position = 0
        while source[position:].strip():
            match = _TOKEN.match(source, position)
            if match is None:
                column = len(source) - len(source[position:].lstrip())
                raise TripSyntaxError(f"unexpected {source[column]!r} at column {column + 1}")
            text = next(group for group in match.groups() if group is not None)
            self.tokens.append((text, match.start(match.lastindex or 0)))
            position = match.end()
        self.index = 0

    def parse(self) -> Expression:
        if not self.tokens:
            raise TripSyntaxError("the trip expression is empty")
        expression = self._any()
        if self.index < len(self.tokens):
            self._fail("'&&', '||' or the end")
        return expression

    def _peek(self) -> str | None:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else None

    def _fail(self, expected: str) -> NoReturn:
        if self.index < len(self.tokens):
            text, column = self.tokens[self.index]
            raise TripSyntaxError(f"expected {expected} at column {column + 1}, got {text!r}")
        raise TripSyntaxError(f"expected {expected} at the end of the expression")

    def _any(self) -> Expression:
        operands = [self._all()]
        while self._peek() == "||":
            self.index += 1
            operands.append(self._all())
        return operands[0] if len(operands) == 1 else AnyOf(tuple(operands))

    def _all(self) -> Expression:
        operands = [self._primary()]
        while self._peek() == "&&":
            self.index += 1
            operands.append(self._primary())
        return operands[0] if len(operands) == 1 else AllOf(tuple(operands))

    def _primary(self) -> Expression:
        if self._peek() == "(":
            self.index += 1
            inner = self._any()
            if self._peek() != ")":
                self._fail("')'")
            self.index += 1
            return inner
        column = self.tokens[self.index][1] if self.index < len(self.tokens) else len(self.source)
        left = self._operand()
        symbol = self._peek()
        if symbol not in _OPERATORS:
            self._fail("a comparison (>, >=, <, <=, ==, !=)")
        self.index += 1
        right = self._operand()
        if isinstance(left, int) and isinstance(right, int):
            raise TripSyntaxError(f"the comparison at column {column + 1} names no variable")
        return Comparison(left, symbol, right)

    def _operand(self) -> str | int:
        token = self._peek()
        if token is not None and token.isdigit():
            self.index += 1
            return int(token)
        if token is not None and token in VARIABLES:
            self.index += 1
            return token
        if token is not None and (token[0].isalpha() or token[0] == "_"):
            known = ", ".join(VARIABLES)
            column = self.tokens[self.index][1]
            raise TripSyntaxError(f"unknown variable {token!r} at column {column + 1}; use {known}")
        self._fail("a variable or an integer")
