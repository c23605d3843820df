"""Dapr's query filters and sorts as SQL over PostgreSQL's jsonb column."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql
from psycopg.types.json import Jsonb

from filters.state.query import field_path


def sql_condition(filter_: Mapping[str, object], params: list[object]) -> sql.Composable:
    """A validated EQ/IN/AND/OR filter as SQL over the jsonb column; values go to `params`."""
    ((op, arg),) = filter_.items()
    if op in ("AND", "OR"):
        assert isinstance(arg, list)
        parts = [sql_condition(child, params) for child in arg]
        return sql.SQL("({})").format(sql.SQL(f" {op} ").join(parts))
    assert isinstance(arg, Mapping)
    ((field, wanted),) = arg.items()
    params.append(field_path(field))
    if op == "IN":
        assert isinstance(wanted, list)
        params.append([Jsonb(value) for value in wanted])
        return sql.SQL("(json #> %s::text[]) = ANY(%s::jsonb[])")
    params.append(Jsonb(wanted))
    return sql.SQL("(json #> %s::text[]) = %s::jsonb")


def sql_sort_terms(path: list[str], descending: bool, params: list[object]) -> list[sql.Composable]:
    """ORDER BY terms for one field, in query.order_key's order: missing and null, then numbers
    (booleans as 0/1), then strings by code point, then objects and arrays by their text."""
    direction = " DESC" if descending else ""
    value = "(json #> %s::text[])"
    terms = [
        f"CASE WHEN jsonb_typeof({value}) IN ('number', 'boolean') THEN 1 "
        f"WHEN jsonb_typeof({value}) = 'string' THEN 2 "
        f"WHEN jsonb_typeof({value}) IN ('object', 'array') THEN 3 ELSE 0 END",
        f"CASE jsonb_typeof({value}) WHEN 'number' THEN {value}::numeric "
        f"WHEN 'boolean' THEN {value}::boolean::integer END",
        f"CASE WHEN jsonb_typeof({value}) = 'string' THEN {value} #>> '{{}}' END COLLATE \"C\"",
        f"CASE WHEN jsonb_typeof({value}) IN ('object', 'array') THEN {value}::text END "
        'COLLATE "C"',
    ]
    for term in terms:
        params.extend([path] * term.count("%s"))
    return [sql.SQL(term + direction) for term in terms]
