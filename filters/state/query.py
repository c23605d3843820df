"""Dapr's state query language: parse the JSON body into a `Query`, and evaluate it in Python."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from filters.dapr.params import BadJson, load_json, printable
from filters.state.store import Query

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_PAGE",
    "NOT_JSON",
    "QueryError",
    "decode_json",
    "decode_token",
    "encode_token",
    "field_path",
    "lookup",
    "matches",
    "order_key",
    "parse_query",
    "sort_values",
    "validate_filter",
    "validate_query",
]

T = TypeVar("T")

OPERATORS = ("EQ", "IN", "AND", "OR")
ORDERS = ("ASC", "DESC")
# AND/OR nested deeper than this is refused: filters are evaluated and turned into SQL by
# recursion, and SQL engines have expression depth limits of their own.
MAX_FILTER_DEPTH = 32
# A page's limit and a token's offset reach SQL as integers: past 32 bits no store could mean
# them, and SQLite cannot even bind a number past 64 bits.
MAX_PAGE = 2**31 - 1
MISSING = object()
NOT_JSON = object()  # decode_json's answer for values that are not JSON text


class QueryError(ValueError):
    """The query is malformed; the message says where."""


def parse_query(body: bytes | str | Mapping[str, object]) -> Query:
    """`{"filter": …, "sort": [{"key", "order"}], "page": {"limit", "token"}}` as a `Query`."""
    raw: object = body
    if isinstance(body, bytes | str):
        try:
            raw = load_json(body)
        except BadJson as exc:
            raise QueryError(f"the query is not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise QueryError("the query must be a JSON object")
    unknown = sorted(set(raw) - {"filter", "sort", "page"})
    if unknown:
        raise QueryError(f"unknown query fields {unknown}; expected filter, sort, page")
    filter_ = raw.get("filter")
    if filter_ is not None:
        if not isinstance(filter_, Mapping):
            raise QueryError("filter: expected an object")
        # Dapr reads an empty filter as "everything".
        filter_ = dict(filter_) or None
        if filter_ is not None:
            validate_filter(filter_, "filter")
    return Query(
        filter=filter_,
        sort=_parse_sort(raw.get("sort")),
        limit=_parse_limit(raw.get("page")),
        token=_parse_token(raw.get("page")),
    )


def validate_query(query: Query) -> int:
    """Check a `Query` however it was built (stores call this first); the page's offset."""
    if query.filter is not None:
        validate_filter(query.filter)
    for i, (key, order) in enumerate(query.sort):
        field_path(key, f"sort[{i}].key")
        if order not in ORDERS:
            raise QueryError(f"sort[{i}].order: expected ASC or DESC, got {order!r}")
    if query.limit is not None and not 0 <= query.limit <= MAX_PAGE:
        raise QueryError(f"page.limit: expected an integer from 0 to {MAX_PAGE}, got {query.limit}")
    return decode_token(query.token)


def validate_filter(filter_: Mapping[str, object], where: str = "filter", depth: int = 0) -> None:
    """Raise QueryError unless `filter_` is one well-formed EQ/IN/AND/OR node (recursively),
    with AND/OR nested at most MAX_FILTER_DEPTH deep."""
    if depth > MAX_FILTER_DEPTH:
        raise QueryError(f"filter: AND/OR nested more than {MAX_FILTER_DEPTH} deep")
    if len(filter_) != 1:
        raise QueryError(f"{where}: expected exactly one of {', '.join(OPERATORS)}")
    ((op, arg),) = filter_.items()
    if op in ("EQ", "IN"):
        if not isinstance(arg, Mapping) or len(arg) != 1:
            raise QueryError(f"{where}.{op}: expected an object with one field")
        ((key, value),) = arg.items()
        field_path(key, f"{where}.{op}")
        values = value if op == "IN" else [value]
        if op == "IN" and not isinstance(value, list):
            raise QueryError(f"{where}.IN.{key}: expected a list of values")
        for item in values:
            if not _is_scalar(item):
                raise QueryError(
                    f"{where}.{op}.{key}: expected a string, number, boolean or null, got {item!r}"
                )
    elif op in ("AND", "OR"):
        if not isinstance(arg, list) or not arg:
            raise QueryError(f"{where}.{op}: expected a non-empty list of filters")
        for i, child in enumerate(arg):
            if not isinstance(child, Mapping):
                raise QueryError(f"{where}.{op}[{i}]: expected an object")
            validate_filter(child, f"{where}.{op}[{i}]", depth + 1)
    else:
        raise QueryError(f"{where}: unknown operator {op!r}; expected {', '.join(OPERATORS)}")


def field_path(key: object, where: str = "key") -> list[str]:
    """The segments of a dotted field key ("person.org" → ["person", "org"])."""
    if not isinstance(key, str) or not key:
        raise QueryError(f"{where}: expected a non-empty field name, got {key!r}")
    parts = key.split(".")
    if any(not part for part in parts):
        raise QueryError(f"{where}: {key!r} has an empty segment")
    return parts


def encode_token(offset: int) -> str:
    """The page token for results starting at `offset` (Dapr's SQL stores use the offset)."""
    return str(offset)


def decode_token(token: str | None) -> int:
    """The offset a token stands for; QueryError if it is not one we issued."""
    if token is None or token == "":
        return 0
    if not token.isascii() or not token.isdigit() or len(token) > 10 or int(token) > MAX_PAGE:
        raise QueryError(f"page.token: {printable(token[:40])} is not a token this store issued")
    return int(token)


def decode_json(value: bytes) -> object:
    """`value` parsed as strict JSON (the API's rules: `load_json`), or NOT_JSON."""
    try:
        return load_json(value)
    except BadJson:
        return NOT_JSON


def lookup(value: object, path: Sequence[str]) -> object:
    """The field at `path` inside a decoded JSON value, or MISSING."""
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def matches(filter_: Mapping[str, object] | None, value: object) -> bool:
    """Whether the decoded JSON `value` satisfies a validated filter (None matches all)."""
    if filter_ is None:
        return True
    ((op, arg),) = filter_.items()
    if op == "AND":
        return all(matches(child, value) for child in _children(arg))
    if op == "OR":
        return any(matches(child, value) for child in _children(arg))
    if not isinstance(arg, Mapping):
        raise QueryError(f"{op}: expected an object")
    ((key, wanted),) = arg.items()
    found = lookup(value, field_path(key))
    if found is MISSING:
        return False
    candidates = wanted if op == "IN" and isinstance(wanted, list) else [wanted]
    return any(_equal(found, candidate) for candidate in candidates)


def order_key(value: object) -> tuple[int, object]:
    """A total order over JSON values, as SQLite orders json_extract results: missing and
    null first, then numbers (booleans as 0/1), then strings, then objects/arrays as JSON text."""
    if value is MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, float(value) if isinstance(value, float) else int(value))
    if isinstance(value, str):
        return (2, value)
    return (3, json.dumps(value, separators=(",", ":")))


def sort_values(
    items: Iterable[T],
    sort: Sequence[tuple[str, str]],
    key_of: Callable[[T], str],
    value_of: Callable[[T], object],
) -> list[T]:
    """Items in the query's sort order; the state key breaks ties so pages are stable."""
    ordered = sorted(items, key=key_of)
    # Stable sorts, least significant first, let each sort key have its own direction.
    for field, order in reversed(sort):
        path = field_path(field)
        ordered.sort(
            key=lambda item: order_key(lookup(value_of(item), path)), reverse=order == "DESC"
        )
    return ordered


def _parse_sort(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise QueryError("sort: expected a list of {key, order}")
    sort: list[tuple[str, str]] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise QueryError(f"sort[{i}]: expected an object with key and order")
        unknown = sorted(set(entry) - {"key", "order"})
        if unknown:
            raise QueryError(f"sort[{i}]: unknown fields {unknown}")
        key = entry.get("key")
        field_path(key, f"sort[{i}].key")
        order = entry.get("order", "ASC")
        if not isinstance(order, str) or order.upper() not in ORDERS:
            raise QueryError(f"sort[{i}].order: expected ASC or DESC, got {order!r}")
        assert isinstance(key, str)
        sort.append((key, order.upper()))
    return tuple(sort)


def _parse_limit(page: object) -> int | None:
    if page is None:
        return None
    if not isinstance(page, Mapping):
        raise QueryError("page: expected an object with limit and token")
    unknown = sorted(set(page) - {"limit", "token"})
    if unknown:
        raise QueryError(f"page: unknown fields {unknown}")
    limit = page.get("limit")
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_PAGE:
        shown = printable(json.dumps(limit)[:40])
        raise QueryError(f"page.limit: expected an integer from 0 to {MAX_PAGE}, got {shown}")
    # Dapr treats a zero limit as "no limit".
    return limit or None


def _parse_token(page: object) -> str | None:
    if not isinstance(page, Mapping):
        return None
    token = page.get("token")
    if token is None or token == "":
        return None
    if not isinstance(token, str):
        raise QueryError(f"page.token: expected a string, got {token!r}")
    decode_token(token)
    return token


def _children(arg: object) -> list[Mapping[str, object]]:
    if not isinstance(arg, list):
        raise QueryError("AND/OR: expected a list of filters")
    return [child for child in arg if isinstance(child, Mapping)]


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _equal(found: object, wanted: object) -> bool:
    # JSON true is not the number 1, though Python says so.
    if isinstance(found, bool) or isinstance(wanted, bool):
        return isinstance(found, bool) and isinstance(wanted, bool) and found == wanted
    if isinstance(found, int | float) and isinstance(wanted, int | float):
        return found == wanted
    return type(found) is type(wanted) and found == wanted
