"""Dapr API conventions the building blocks share: `metadata.*` query keys, metadata names, JSON."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote_to_bytes

__all__ = [
    "MAX_JSON_DEPTH",
    "BadJson",
    "BadParam",
    "is_json_content_type",
    "load_json",
    "metadata_params",
    "metadata_value",
    "parse_go_int",
    "path_param",
    "printable",
]

# Arrays and objects nested deeper than this are refused: every later walk of a value (the
# query filter, re-encoding a state value) stays far from Python's recursion limit.
MAX_JSON_DEPTH = 128

_GO_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.ParseInt(s, 10, …) reads
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class BadJson(ValueError):
    """A body that is not JSON a Dapr API takes; the message says why, for the API's error."""


class BadParam(ValueError):
    """A percent-encoded path parameter that is not UTF-8 text."""


def metadata_params(query: bytes) -> dict[str, str]:
    """`?metadata.x=y` as {"x": "y"} (the first value of each)."""
    pairs = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    return {k[len("metadata.") :]: v[0] for k, v in pairs.items() if k.startswith("metadata.")}


def metadata_value(metadata: Mapping[str, str], key: str) -> str:
    """The value of `key` ("" when absent); daprd matches metadata names case-insensitively."""
    lowered = key.lower()
    return next((v for k, v in metadata.items() if k.lower() == lowered), "")


def is_json_content_type(content_type: str) -> bool:
    """application/json (with parameters) or any `+json` suffix type."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def parse_go_int(text: str) -> int | None:
    """A base-10 integer as daprd's components read metadata numbers (an optional sign, then
    ASCII digits only: no spaces, underscores or other digits Python's int takes); else None."""
    return int(text) if _GO_INT.fullmatch(text) else None


def path_param(raw: bytes) -> str:
    """A path parameter, percent-decoded after routing as daprd does; BadParam unless the
    bytes are UTF-8 (a silent U+FFFD would make two different keys one)."""
    data = unquote_to_bytes(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadParam(f"{printable(data)} is not valid UTF-8 (byte {exc.start})") from None


def printable(value: bytes | bytearray | str) -> str:
    """Text for an error message: bytes decoded (undecodable ones as \\xNN), and control
    characters and lone surrogates escaped, never a Python repr."""
    text = value if isinstance(value, str) else bytes(value).decode("utf-8", "backslashreplace")
    return _UNPRINTABLE.sub(_escape, text)


def load_json(data: bytes | str) -> object:
    """Strict JSON, as the Dapr APIs take it: UTF-8; no NaN, Infinity or numbers beyond a
    double; no lone surrogates (they cannot be stored or sent as UTF-8); arrays and objects
    nested at most MAX_JSON_DEPTH deep. BadJson otherwise."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadJson(f"invalid UTF-8 at byte {exc.start}") from None
    else:
        text = data
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise BadJson(_too_deep()) from None
    except ValueError as exc:
        raise BadJson(str(exc)) from None
    # Cheap scans first: only a body that could break a rule is walked.
    deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH
    if deep or _SURROGATE_ESCAPE.search(text):
        _check(value)
    return value


def _check(value: object) -> None:
    """Walk `value` without recursion: depth and lone surrogates."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                raise BadJson(f"lone surrogate in string {printable(item)}")
        elif isinstance(item, list | dict):
            if depth >= MAX_JSON_DEPTH:
                raise BadJson(_too_deep())
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _too_deep() -> str:
    return f"arrays and objects nested more than {MAX_JSON_DEPTH} deep"


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
