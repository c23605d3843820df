"""W3C and B3 trace context read from our header lists into ints, as OTel's propagators read it."""

from __future__ import annotations

import re

from opentelemetry.trace import TraceState

from proxy.http.model import Headers

SAMPLED = 0x01  # the W3C sampled trace flag (B3's sampled state maps onto it)

# The OTel TraceContextTextMapPropagator's rules, applied to the first traceparent field.
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_TRACEPARENT_MAX = 512
_TRACESTATE_MAX = 512
# The OTel B3 propagators' rules.
_B3_TRACE_ID = re.compile(r"[\da-fA-F]{16}|[\da-fA-F]{32}")
_B3_SPAN_ID = re.compile(r"[\da-fA-F]{16}")
_B3_SAMPLED = frozenset({"1", "True", "true", "d"})


class Parent:
    """A caller's span: its ids, trace flags and (W3C only) trace state."""

    __slots__ = ("flags", "span_id", "state", "trace_id")

    def __init__(self, trace_id: int, span_id: int, flags: int, state: TraceState | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.state = state

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)


def _first(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def tracecontext(headers: Headers) -> Parent | None:
    """The W3C parent (traceparent, with tracestate), or None where OTel would find none."""
    header = _first(headers, b"traceparent")
    if not header or len(header) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.search(header)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    if (version == "00" and rest) or version == "ff":
        return None
    states = [value.decode("latin-1") for key, value in headers if key == b"tracestate"]
    state = None
    if states and sum(len(s) for s in states) + len(states) - 1 <= _TRACESTATE_MAX:
        state = TraceState.from_header(states)
    return Parent(int(trace_id, 16), int(span_id, 16), int(flags, 16), state)


def b3(headers: Headers) -> Parent | None:
    """The B3 parent: the single `b3` header if present, else the `x-b3-*` ones (both OTel B3
    propagators read them this way); None where OTel would find no valid one."""
    trace_id = span_id = None
    single = _first(headers, b"b3")
    flags = None
    if single:
        sampled = "1"  # B3's "deferred" has no SpanContext equivalent: OTel records it
        fields = single.split("-", 4)
        if len(fields) == 1:
            sampled = fields[0]
        elif len(fields) == 2:
            trace_id, span_id = fields
        elif len(fields) in (3, 4):
            trace_id, span_id, sampled = fields[:3]
    else:
        trace_id = _first(headers, b"x-b3-traceid")
        span_id = _first(headers, b"x-b3-spanid")
        sampled = _first(headers, b"x-b3-sampled") or "0"
        flags = _first(headers, b"x-b3-flags")
    if (
        not trace_id
        or not span_id
        or _B3_TRACE_ID.fullmatch(trace_id) is None
        or _B3_SPAN_ID.fullmatch(span_id) is None
    ):
        return None
    trace, span = int(trace_id, 16), int(span_id, 16)
    if not trace or not span:  # an all-zero id is no valid context
        return None
    return Parent(trace, span, SAMPLED if sampled in _B3_SAMPLED or flags == "1" else 0, None)
