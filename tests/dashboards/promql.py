"""A small PromQL reader for dashboard tests: metric names, label matchers and grouping labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Grafana's interval macros become a fixed range; every other $var (used inside =~"…") matches all.
_MACRO = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}"
)
_VAR = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<dur>\d+(?:ms|[smhdwy])\b)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[{}(),=<>+\-*/%^@])
    """,
    re.VERBOSE,
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "group_left", "group_right"}
)
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?P<expr>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$", re.S
)


def substitute(expr: str, interval: str = "1m", all_value: str = ".*") -> str:
    """Replace Grafana macros by `interval` and dashboard variables by `all_value`."""
    return _VAR.sub(all_value, _MACRO.sub(interval, expr))


@dataclass
class Query:
    """What one expression reads: metric → matcher labels, grouping labels, functions called."""

    selectors: list[tuple[str | None, set[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> set[str]:
        return {m for m, _ in self.selectors if m is not None}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _matchers(toks: list[tuple[str, str]], i: int) -> tuple[int, set[str]]:
    """`toks[i]` is "{"; return the index after the matching "}" and the label names matched."""
    labels: set[str] = set()
    i += 1
    while i < len(toks) and toks[i] != ("op", "}"):
        kind, text = toks[i]
        if kind in ("ident", "str") and i + 1 < len(toks) and toks[i + 1][1] in _MATCH_OPS:
            labels.add(text.strip("\"'`") if kind == "str" else text)
        i += 1
    return i + 1, labels


def parse(expr: str) -> Query:
    """Read a PromQL expression (Grafana variables already substituted)."""
    toks = _tokens(expr)
    query = Query()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if kind == "ident":
            if text in _GROUPING and nxt == ("op", "("):
                i += 2
                while i < len(toks) and toks[i] != ("op", ")"):
                    if toks[i][0] == "ident":
                        query.grouping.add(toks[i][1])
                    i += 1
                i += 1
                continue
            if nxt == ("op", "(") or nxt in (("ident", "by"), ("ident", "without")):
                query.functions.add(text)  # a call, or an aggregation written `sum by (…) (…)`
                i += 1
                continue
            if text.lower() in _KEYWORDS or text in _GROUPING:
                i += 1
                continue
            i += 1
            labels: set[str] = set()
            if i < len(toks) and toks[i] == ("op", "{"):
                i, labels = _matchers(toks, i)
            query.selectors.append((text, labels))
            continue
        if (kind, text) == ("op", "{"):
            i, labels = _matchers(toks, i)
            query.selectors.append((None, labels))
            continue
        i += 1
    return query


def template_query(query: str) -> tuple[str | None, str | None]:
    """A Grafana Prometheus variable query → (PromQL expression, label); label_values(m, l) only."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        return None, None
    return m.group("expr"), m.group("label")


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, raw expr) for every target of every panel."""
    for panel in walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable name, raw query) for every query variable."""
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if isinstance(q, str) and q:
            yield var["name"], q
