"""Dapr's query language: parsing errors, and the Python evaluator the memory store uses."""

from __future__ import annotations

from typing import Any

import pytest

from filters.state.query import (
    NOT_JSON,
    QueryError,
    decode_json,
    decode_token,
    matches,
    parse_query,
    sort_values,
    validate_query,
)
from filters.state.store import Query


def test_parse_a_full_query() -> None:
    body = b"""{"filter": {"AND": [{"EQ": {"person.org": "Dev Ops"}},
                                   {"IN": {"state": ["CA", "WA"]}}]},
               "sort": [{"key": "state", "order": "desc"}, {"key": "person.id"}],
               "page": {"limit": 2, "token": "4"}}"""
    assert parse_query(body) == Query(
        filter={"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["CA", "WA"]}}]},
        sort=(("state", "DESC"), ("person.id", "ASC")),
        limit=2,
        token="4",
    )


def test_empty_query_and_filter_mean_everything() -> None:
    assert parse_query("{}") == Query()
    assert parse_query({"filter": {}, "page": {"limit": 0}}) == Query()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"filters": {}}', "unknown query fields ['filters']"),
        ('{"filter": []}', "filter: expected an object"),
        ('{"filter": {"EQ": {"a": 1}, "IN": {"b": [1]}}}', "expected exactly one of"),
        ('{"filter": {"NE": {"a": 1}}}', "unknown operator 'NE'"),
        ('{"filter": {"EQ": {"a": 1, "b": 2}}}', "filter.EQ: expected an object with one field"),
        ('{"filter": {"EQ": {"a": [1]}}}', "expected a string, number, boolean or null"),
        ('{"filter": {"EQ": {"a..b": 1}}}', "has an empty segment"),
        ('{"filter": {"IN": {"a": 1}}}', "filter.IN.a: expected a list of values"),
        ('{"filter": {"AND": []}}', "filter.AND: expected a non-empty list"),
        ('{"filter": {"OR": [{"EQ": {"a": 1}}, {"XX": 1}]}}', "filter.OR[1]: unknown operator"),
        ('{"sort": {"key": "a"}}', "sort: expected a list"),
        ('{"sort": [{"key": "a", "order": "UP"}]}', "sort[0].order: expected ASC or DESC"),
        ('{"sort": [{"order": "ASC"}]}', "sort[0].key: expected a non-empty field name"),
        ('{"page": {"limit": -1}}', "page.limit: expected an integer from 0 to 2147483647"),
        ('{"page": {"limit": "3"}}', "page.limit: expected an integer from 0 to 2147483647"),
        ('{"page": {"token": "abc"}}', "is not a token this store issued"),
        ('{"page": {"limit": 2147483648}}', "page.limit: expected an integer from 0 to"),
        ('{"page": {"token": "2147483648"}}', "2147483648 is not a token this store issued"),
        ('{"page": {"size": 3}}', "page: unknown fields ['size']"),
    ],
)
def test_parse_errors_say_what_is_wrong(body: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_query(body)


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)


DOC: dict[str, Any] = {
    "person": {"org": "Dev Ops", "id": 1, "active": True, "manager": None},
    "state": "CA",
    "score": 2.5,
}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (None, True),
        ({"EQ": {"person.org": "Dev Ops"}}, True),
        ({"EQ": {"person.org": "dev ops"}}, False),
        ({"EQ": {"person.id": 1}}, True),
        ({"EQ": {"person.id": 1.0}}, True),
        ({"EQ": {"person.id": "1"}}, False),
        ({"EQ": {"person.id": True}}, False),
        ({"EQ": {"person.active": True}}, True),
        ({"EQ": {"person.active": 1}}, False),
        ({"EQ": {"person.manager": None}}, True),
        ({"EQ": {"person.missing": None}}, False),
        ({"EQ": {"state.deeper": "CA"}}, False),
        ({"IN": {"state": ["WA", "CA"]}}, True),
        ({"IN": {"state": []}}, False),
        ({"AND": [{"EQ": {"state": "CA"}}, {"EQ": {"score": 2.5}}]}, True),
        ({"AND": [{"EQ": {"state": "CA"}}, {"EQ": {"score": 3}}]}, False),
        ({"OR": [{"EQ": {"state": "WA"}}, {"EQ": {"score": 2.5}}]}, True),
        ({"OR": [{"EQ": {"state": "WA"}}, {"IN": {"person.id": [2, 3]}}]}, False),
    ],
)
def test_matches(filter_: dict[str, object] | None, expected: bool) -> None:
    assert matches(filter_, DOC) is expected


def test_sort_orders_types_and_breaks_ties_by_key() -> None:
    rows = {
        "e": {"n": "b"},
        "d": {"n": 2},
        "c": {},
        "b": {"n": 2},
        "a": {"n": None},
        "f": {"n": 10},
    }
    ordered = sort_values(rows, [("n", "ASC")], lambda k: k, lambda k: rows[k])
    assert ordered == ["a", "c", "b", "d", "f", "e"]
    ordered = sort_values(rows, [("n", "DESC")], lambda k: k, lambda k: rows[k])
    assert ordered == ["e", "f", "b", "d", "a", "c"]


def test_sort_by_two_keys_with_their_own_directions() -> None:
    rows = {"a": {"x": 1, "y": 1}, "b": {"x": 1, "y": 2}, "c": {"x": 2, "y": 1}}
    ordered = sort_values(rows, [("x", "DESC"), ("y", "ASC")], lambda k: k, lambda k: rows[k])
    assert ordered == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        (b'{"a": [1, "\\u00e9"]}', {"a": [1, "é"]}),
        (b'"text"', "text"),
        (b"null", None),
        (b"NaN", NOT_JSON),
        (b'{"a": Infinity}', NOT_JSON),
        (b"\xff\xfe{}", NOT_JSON),
        (b"plain", NOT_JSON),
        (b"", NOT_JSON),
        (b"[1e400]", NOT_JSON),
        (b'"\\ud800"', NOT_JSON),
        (b"[" * 100_000 + b"]" * 100_000, NOT_JSON),
    ],
)
def test_decode_json_is_strict(value: bytes, decoded: object) -> None:
    assert decode_json(value) == decoded


def test_tokens() -> None:
    assert decode_token(None) == 0
    assert decode_token("12") == 12
    with pytest.raises(QueryError):
        decode_token("-1")


@pytest.mark.parametrize(
    "query",
    [
        Query(sort=[("a", "ASC; DROP TABLE state")]),
        Query(sort=[("", "ASC")]),
        Query(limit=-1),
        Query(token="page-2"),
        Query(filter={"EQ": {"a": {"nested": 1}}}),
    ],
)
def test_validate_query_checks_hand_built_queries(query: Query) -> None:
    with pytest.raises(QueryError):
        validate_query(query)


def test_validate_query_gives_the_offset() -> None:
    assert validate_query(Query(token="6", limit=3)) == 6


def test_a_filter_nested_5000_deep_is_a_query_error_not_a_recursion_error() -> None:
    filter_: dict[str, object] = {"EQ": {"a": 1}}
    for _ in range(5000):
        filter_ = {"AND": [filter_]}
    with pytest.raises(QueryError, match="filter: AND/OR nested more than 32 deep"):
        validate_query(Query(filter=filter_))
    with pytest.raises(QueryError, match="filter: AND/OR nested more than 32 deep"):
        parse_query({"filter": filter_})
