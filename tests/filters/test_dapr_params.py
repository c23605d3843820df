"""The Dapr APIs' shared conventions: strict JSON, path parameters, text in error messages."""

from __future__ import annotations

import pytest

from filters.dapr.params import MAX_JSON_DEPTH, BadJson, BadParam, load_json, path_param, printable
from filters.state.service import expire_time
from filters.state.store import StateItem


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"NaN", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "number 1e400 is out of range"),
        (b'"\\ud800"', r"lone surrogate in string \ud800"),
        (b'{"\\udc00x": 1}', r"lone surrogate in string \udc00x"),
        (b"[" * 100_000 + b"]" * 100_000, f"nested more than {MAX_JSON_DEPTH} deep"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested more than"),
        (b'"\xed\xa0\x80"', "invalid UTF-8 at byte 1"),
        (b"[1,", "Expecting value"),
    ],
)
def test_load_json_refuses_what_no_api_takes(body: bytes, reason: str) -> None:
    with pytest.raises(BadJson, match=reason.replace("\\", "\\\\").replace("[", "\\[")):
        load_json(body)


def test_load_json_takes_what_json_allows() -> None:
    assert load_json(b'"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character
    assert load_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    assert load_json(b'{"n": 1e308, "i": 123456789012345678901234567890}') == {
        "n": 1e308,
        "i": 123456789012345678901234567890,
    }
    assert load_json('["[[[[", "{{{{"]') == ["[[[[", "{{{{"]


def test_path_params_are_utf8_or_refused() -> None:
    assert path_param(b"a%2Fb%20%C3%A9") == "a/b é"
    with pytest.raises(BadParam, match=r"^\\xed\\xa0\\x80 is not valid UTF-8 \(byte 0\)$"):
        path_param(b"%ED%A0%80")


def test_printable_shows_text_never_a_repr() -> None:
    assert printable(bytearray(b"a\r\n\x00\xffb")) == r"a\x0d\x0a\x00\xffb"
    assert printable("caf\u00e9 \ud800\x7f") == r"café \ud800\x7f"


def test_an_expiry_past_year_9999_reads_as_its_last_second() -> None:
    def item(expires_at: float | None) -> StateItem:
        return StateItem("k", b"1", "1", None, expires_at)

    assert expire_time(item(0.5)) == "1970-01-01T00:00:00Z"
    assert expire_time(item(9.3e18)) == "9999-12-31T23:59:59Z"
    assert expire_time(item(2.0**1023)) == "9999-12-31T23:59:59Z"
    assert expire_time(item(None)) is None
