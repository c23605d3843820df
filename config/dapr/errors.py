"""The one error Dapr resource loading raises: every problem, each with its file and path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DaprResourceError", "ResourceProblem"]


@dataclass(frozen=True, slots=True)
class ResourceProblem:
    """One thing wrong with a resource: where (file, and document when a file holds several),
    the JSONPath-like location inside the document, and what. Warnings have the same shape."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}"


class DaprResourceError(Exception):
    """Resources that cannot be used; `problems` holds every reason found, in file order, and
    `warnings` what would only have been logged (unknown fields) had they loaded."""

    def __init__(
        self, problems: Sequence[ResourceProblem], warnings: Sequence[ResourceProblem] = ()
    ) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)
        super().__init__("\n".join(str(p) for p in self.problems))
