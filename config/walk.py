"""Structure pass: check plain YAML data against the config types, collecting every problem."""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi

from config.schema import Duration


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration, at a JSONPath-like location; `source` names the
    file when it is not the one being reported on (a Dapr resource a sidecar run loads)."""

    path: str
    message: str
    source: str | None = None


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def child(path: str, key: object) -> str:
    """The path of `key` (a field name, a dict key or a list index) under `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and _IDENT.match(key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def kind(value: object) -> str:
    """How a YAML value's type is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _describe(t: mi.Type) -> str:
    names = {
        mi.StrType: "str",
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.BoolType: "bool",
        mi.NoneType: "null",
        mi.ListType: "list",
        mi.DictType: "object",
        mi.StructType: "object",
    }
    if isinstance(t, mi.LiteralType):  # in a union (alone, a wrong value is "must be one of")
        return " or ".join(repr(v) for v in t.values)
    if isinstance(t, mi.CustomType) and t.cls is Duration:
        return "duration"
    if isinstance(t, mi.UnionType):
        return " or ".join(dict.fromkeys(_describe(u) for u in t.types))
    return names.get(type(t), str(t))


class _Invalid:
    """Marker for a value that failed its check (the caller substitutes a default or a zero)."""


INVALID: Any = _Invalid()


class Walker:
    """Walks plain data against msgspec type info, returning a repaired copy and its problems.

    The repaired copy keeps list indices stable (bad items become placeholders) so that a
    later reference pass can still run and report paths that match the user's file.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.replaced: list[str] = []  # lists in which an item became a placeholder
        self._literal_order: dict[frozenset[object], tuple[object, ...]] = {}
        self._seen_structs: set[type] = set()

    def check(self, value: object, t: mi.Type, path: str) -> object:
        """The value (repaired where needed), or INVALID after recording the problem."""
        if isinstance(t, mi.AnyType):
            return value
        if isinstance(t, mi.UnionType):
            return self._union(value, t, path)
        if isinstance(t, mi.StructType):
            return self._struct(value, t, path, skip=None)
        if isinstance(t, mi.ListType):
            if not isinstance(value, list):
                return self._wrong(value, t, path)
            items = [self.check(v, t.item_type, child(path, i)) for i, v in enumerate(value)]
            if any(v is INVALID for v in items):
                self.replaced.append(path)
            return [zero(t.item_type) if v is INVALID else v for v in items]
        if isinstance(t, mi.DictType):
            return self._dict(value, t, path)
        if isinstance(t, mi.LiteralType):
            return self._literal(value, t, path)
        if isinstance(t, mi.CustomType) and t.cls is Duration:
            try:
                return Duration.parse(value)
            except ValueError as exc:
                self.problems.append(Problem(path, str(exc)))
                return INVALID
        if isinstance(t, mi.StrType):
            ok = isinstance(value, str)
        elif isinstance(t, mi.BoolType):
            ok = isinstance(value, bool)
        elif isinstance(t, mi.IntType):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(t, mi.FloatType):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(t, mi.NoneType):
            ok = value is None
        else:
            self.problems.append(Problem(path, f"unsupported config type {t!r}"))
            return INVALID
        return value if ok else self._wrong(value, t, path)

    def _wrong(self, value: object, t: mi.Type, path: str) -> object:
        self.problems.append(Problem(path, f"expected {_describe(t)}, got {kind(value)}"))
        return INVALID

    def _dict(self, value: object, t: mi.DictType, path: str) -> object:
        if not isinstance(value, dict):
            return self._wrong(value, t, path)
        out: dict[object, object] = {}
        for key, item in value.items():
            where = child(path, key)
            checked_key = self.check(key, t.key_type, where)
            checked = self.check(item, t.value_type, where)
            if checked_key is not INVALID and checked is not INVALID:
                out[checked_key] = checked
        return out

    def _literal(self, value: object, t: mi.LiteralType, path: str) -> object:
        if any(value == v and type(value) is type(v) for v in t.values):
            return value
        order = self._literal_order.get(frozenset(t.values), t.values)
        allowed = ", ".join(str(v) for v in order)
        self.problems.append(Problem(path, f"must be one of {allowed}, got {value!r}"))
        return INVALID

    def _union(self, value: object, t: mi.UnionType, path: str) -> object:
        types = [u for u in t.types if not isinstance(u, mi.NoneType)]
        if value is None and len(types) < len(t.types):
            return None
        structs = [u for u in types if isinstance(u, mi.StructType) and u.tag_field]
        if structs and len(structs) == len(types):
            return self._tagged(value, structs, path)
        if len(types) == 1:
            return self.check(value, types[0], path)
        for u in types:
            trial = Walker()
            trial._literal_order = self._literal_order
            result = trial.check(value, u, path)
            if not trial.problems:
                return result
        return self._wrong(value, t, path)

    def _tagged(self, value: object, structs: list[mi.StructType], path: str) -> object:
        if not isinstance(value, dict):
            self.problems.append(Problem(path, f"expected object, got {kind(value)}"))
            return INVALID
        field = structs[0].tag_field
        assert field is not None
        tags = ", ".join(str(s.tag) for s in structs)
        if field not in value:
            self.problems.append(Problem(path, f"missing field '{field}'; must be one of {tags}"))
            return INVALID
        for s in structs:
            if value[field] == s.tag:
                return self._struct(value, s, path, skip=field)
        self.problems.append(
            Problem(child(path, field), f"unknown {field} {value[field]!r}; must be one of {tags}")
        )
        return INVALID

    def _struct(self, value: object, t: mi.StructType, path: str, skip: str | None) -> object:
        if not isinstance(value, dict):
            return self._wrong(value, t, path)
        self._learn_literals(t.cls)
        fields = {f.encode_name: f for f in t.fields}
        out: dict[str, object] = {}
        if skip is not None:
            out[skip] = value[skip]
        for key, item in value.items():
            if key == skip:
                continue
            f = fields.get(key) if isinstance(key, str) else None
            if f is None:
                if t.forbid_unknown_fields:
                    self.problems.append(Problem(child(path, key), _unknown(key, fields)))
                continue
            checked = self.check(item, f.type, child(path, key))
            if checked is not INVALID:
                out[key] = checked
            elif f.required:
                out[key] = zero(f.type)
        for f in t.fields:
            if f.required and f.encode_name not in value:
                where = child(path, f.encode_name)
                self.problems.append(Problem(where, f"missing required field '{f.encode_name}'"))
                out[f.encode_name] = zero(f.type)
        return out

    def _learn_literals(self, cls: type) -> None:
        """Remember each Literal's declared value order, for messages (type_info sorts them)."""
        if cls in self._seen_structs:
            return
        self._seen_structs.add(cls)
        stack: list[object] = list(typing.get_type_hints(cls).values())
        while stack:
            hint = stack.pop()
            if typing.get_origin(hint) is typing.Literal:
                args = typing.get_args(hint)
                self._literal_order[frozenset(args)] = args
            else:
                stack.extend(typing.get_args(hint))


def _unknown(key: object, fields: dict[str, mi.Field]) -> str:
    close = difflib.get_close_matches(str(key), list(fields), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown field {key!r}{hint}"


def zero(t: mi.Type) -> object:
    """A placeholder of type `t`, standing in for a missing or broken required value."""
    if isinstance(t, mi.UnionType):
        if any(isinstance(u, mi.NoneType) for u in t.types):
            return None
        return zero(t.types[0])
    if isinstance(t, mi.StructType):
        out: dict[str, object] = {f.encode_name: zero(f.type) for f in t.fields if f.required}
        if t.tag_field is not None:
            out[t.tag_field] = t.tag
        return out
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.ListType):
        return []
    if isinstance(t, mi.DictType):
        return {}
    if isinstance(t, mi.StrType):
        return ""
    if isinstance(t, mi.BoolType):
        return False
    if isinstance(t, mi.IntType | mi.FloatType):
        return 0
    if isinstance(t, mi.CustomType) and t.cls is Duration:
        return 0
    return None


@dataclass(frozen=True)
class Structure:
    """The structure pass's verdict on some data."""

    problems: list[Problem]
    repaired: object  # converts to the type: bad values dropped (defaults) or placeholders
    suspect: list[str]  # paths holding placeholders; later findings there are not to be trusted


def check_structure(data: object, cls: type[msgspec.Struct]) -> Structure:
    """Every structural problem of `data` as a `cls`, plus a repaired copy that will convert."""
    walker = Walker()
    repaired = walker.check(data, mi.type_info(cls), "$")
    if repaired is INVALID:
        repaired = zero(mi.type_info(cls))
    suspect = [p.path for p in walker.problems] + walker.replaced
    return Structure(walker.problems, repaired, suspect)
