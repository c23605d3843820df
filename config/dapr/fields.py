"""Typed reads from one parsed Dapr resource document, each bad value recorded with its path."""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime

from config.dapr.duration import parse_go_duration
from config.walk import Problem, child, kind

__all__ = ["Fields", "ResourceMeta", "read_meta", "scopes_overlap", "stringify"]


def stringify(value: object) -> str:
    """A YAML scalar the way Dapr hands metadata to components: true -> "true", 5 -> "5"."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json.dumps(value, separators=(",", ":"), default=str)


class Fields:
    """Reads fields out of mappings; a bad value becomes a Problem and the given default.

    Unknown keys are `warnings`, not problems: daprd decodes resources leniently and ignores
    them, so a resource that runs under daprd must load here too, but a typo stays visible."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def report(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def known_keys(self, mapping: dict[str, object], path: str, allowed: Collection[str]) -> None:
        """One warning per key that is not in `allowed`, with a did-you-mean hint."""
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.warnings.append(Problem(child(path, key), f"unknown field (ignored{hint})"))

    def as_mapping(self, value: object, path: str) -> dict[str, object]:
        """`value` if it is a mapping (null counts as empty), else {} after a problem."""
        if value is None:
            return {}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return value
        self.report(path, f"expected object, got {kind(value)}")
        return {}

    def section(self, mapping: dict[str, object], key: str, path: str) -> dict[str, object]:
        return self.as_mapping(mapping.get(key), child(path, key))

    def items(self, mapping: dict[str, object], key: str, path: str) -> list[object]:
        value = mapping.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.report(child(path, key), f"expected list, got {kind(value)}")
        return []

    def text(self, mapping: dict[str, object], key: str, path: str, default: str = "") -> str:
        value = mapping.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            return value
        self.report(child(path, key), f"expected str, got {kind(value)}")
        return default

    def required_text(self, mapping: dict[str, object], key: str, path: str) -> str:
        if mapping.get(key) in (None, ""):
            self.report(child(path, key), f"missing required field '{key}'")
            return ""
        return self.text(mapping, key, path)

    def flag(self, mapping: dict[str, object], key: str, path: str, default: bool) -> bool:
        value = mapping.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # Dapr accepts the quoted form too
        self.report(child(path, key), f"expected true or false, got {value!r}")
        return default

    def integer(
        self,
        mapping: dict[str, object],
        key: str,
        path: str,
        default: int,
        *,
        minimum: int | None = None,
    ) -> int:
        value = mapping.get(key)
        if value is None:
            return default
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            number = int(value.strip())
        if number is None:
            self.report(child(path, key), f"expected int, got {kind(value)}")
            return default
        if minimum is not None and number < minimum:
            self.report(child(path, key), f"must be at least {minimum}, got {number}")
            return default
        return number

    def duration(self, mapping: dict[str, object], key: str, path: str, default: float) -> float:
        value = mapping.get(key)
        if value is None:
            return default
        return self.duration_value(value, child(path, key), default)

    def duration_value(self, value: object, path: str, default: float) -> float:
        try:
            return parse_go_duration(value)
        except ValueError as exc:
            self.report(path, str(exc))
            return default

    def strings(self, mapping: dict[str, object], key: str, path: str) -> list[str]:
        out: list[str] = []
        for i, item in enumerate(self.items(mapping, key, path)):
            if isinstance(item, str):
                out.append(item)
            else:
                self.report(child(child(path, key), i), f"expected str, got {kind(item)}")
        return out

    def choice(
        self,
        mapping: dict[str, object],
        key: str,
        path: str,
        allowed: tuple[str, ...],
        default: str,
    ) -> str:
        """A case-insensitive choice among `allowed`, returned in its canonical spelling."""
        value = self.text(mapping, key, path, default)
        for option in allowed:
            if value.lower() == option.lower():
                return option
        if value:
            choices = ", ".join(allowed)
            self.report(child(path, key), f"must be one of {choices}, got {value!r}")
        return default


@dataclass(frozen=True, slots=True)
class ResourceMeta:
    """What every Dapr resource carries besides its spec."""

    kind: str
    api_version: str
    name: str
    namespace: str  # metadata.namespace, else the namespace the sidecar runs in
    scopes: tuple[str, ...]  # app ids allowed to load it; empty means every app

    def in_scope(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes


def scopes_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether some app loads both resources with these scopes (no scopes: every app does)."""
    return not a or not b or bool(set(a) & set(b))


def read_meta(doc: dict[str, object], fields: Fields, namespace: str) -> ResourceMeta:
    """The kind, apiVersion, metadata.name/namespace and scopes of one resource document."""
    metadata = fields.section(doc, "metadata", "$")
    scopes = fields.strings(doc, "scopes", "$")
    return ResourceMeta(
        kind=fields.text(doc, "kind", "$"),
        api_version=fields.text(doc, "apiVersion", "$"),
        name=fields.required_text(metadata, "name", "$.metadata"),
        namespace=fields.text(metadata, "namespace", "$.metadata") or namespace,
        scopes=tuple(scopes),
    )
