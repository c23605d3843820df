"""Trace context read from headers into ints: the same parent the OTel propagators extract."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from filters.tracing.propagation import Propagation
from proxy.http.model import Headers

T32, S16 = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
T16 = "a3ce929d0e0e4736"
OTEL: dict[str, type[TextMapPropagator]] = {
    "tracecontext": TraceContextTextMapPropagator,
    "b3": B3SingleFormat,
    "b3multi": B3MultiFormat,
}


class HeaderGetter(Getter[Headers]):
    """How the tracing filter handed our header lists to the OTel propagators."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = [v.decode("latin-1") for k, v in carrier if k == key.encode()]
        return found or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


def otel_extract(names: list[str], headers: Headers) -> trace.SpanContext | None:
    for name in dict.fromkeys(names):
        ctx = OTEL[name]().extract(headers, Context(), HeaderGetter())
        found = trace.get_current_span(ctx).get_span_context()
        if found.is_valid:
            return found
    return None


def h(*pairs: tuple[str, str]) -> Headers:
    return [(k.encode(), v.encode("latin-1")) for k, v in pairs]


W3C = [
    h(("traceparent", f"00-{T32}-{S16}-01")),
    h(("traceparent", f"00-{T32}-{S16}-00"), ("tracestate", "k=v,a=b")),
    h(("traceparent", f"00-{T32}-{S16}-03"), ("tracestate", "k=v"), ("tracestate", "x=1")),
    h(("traceparent", f"00-{T32}-{S16}-01"), ("tracestate", "not a state!")),
    h(("traceparent", f"00-{T32}-{S16}-01"), ("tracestate", "k=" + "v" * 600)),
    h(("traceparent", f" \t00-{T32}-{S16}-01 ")),
    h(("traceparent", f"00-{T32}-{S16}-01-extra")),
    h(("traceparent", f"01-{T32}-{S16}-01-extra")),
    h(("traceparent", f"ff-{T32}-{S16}-01")),
    h(("traceparent", f"00-{'0' * 32}-{S16}-01")),
    h(("traceparent", f"00-{T32}-{'0' * 16}-01")),
    h(("traceparent", f"00-{T32.upper()}-{S16}-01")),
    h(("traceparent", f"00-{T32}-{S16}-1")),
    h(("traceparent", f"00-{T32}-{S16}-ff")),
    h(("traceparent", "")),
    h(("traceparent", "x" * 600)),
    h(("traceparent", f"00-{T32}-{S16}-01"), ("traceparent", f"00-{T32}-{T16}-00")),
]
B3 = [
    h(("b3", f"{T32}-{S16}-1")),
    h(("b3", f"{T32}-{S16}-0")),
    h(("b3", f"{T32}-{S16}-d")),
    h(("b3", f"{T32}-{S16}-true")),
    h(("b3", f"{T32}-{S16}-1-{S16}")),
    h(("b3", f"{T32}-{S16}")),
    h(("b3", f"{T16}-{S16}-1")),
    h(("b3", f"{T32}-{S16}-1-{S16}-more")),
    h(("b3", "0")),
    h(("b3", "1")),
    h(("b3", f"{'0' * 32}-{S16}-1")),
    h(("b3", f"{T32}-{'0' * 16}-1")),
    h(("b3", f"{T32.upper()}-{S16}-1")),
    h(("b3", f"-{S16}-1")),
    h(("b3", f"{T32[:20]}-{S16}-1")),
    h(("b3", ""), ("x-b3-traceid", T32), ("x-b3-spanid", S16), ("x-b3-sampled", "1")),
    h(("x-b3-traceid", T32), ("x-b3-spanid", S16), ("x-b3-sampled", "1")),
    h(("x-b3-traceid", T32), ("x-b3-spanid", S16), ("x-b3-sampled", "0")),
    h(("x-b3-traceid", T32), ("x-b3-spanid", S16), ("x-b3-sampled", "True")),
    h(("x-b3-traceid", T32), ("x-b3-spanid", S16), ("x-b3-flags", "1")),
    h(("x-b3-traceid", T32), ("x-b3-spanid", S16)),
    h(("x-b3-traceid", T16), ("x-b3-spanid", S16), ("x-b3-sampled", "1")),
    h(("x-b3-traceid", T32), ("x-b3-sampled", "1")),
    h(("x-b3-traceid", ""), ("x-b3-spanid", S16), ("x-b3-sampled", "1")),
    h(("x-b3-sampled", "0")),
    h(("x-b3-traceid", T32), ("x-b3-spanid", S16), ("b3", f"{T16}-{S16}-0")),
]
MIXED = [
    h(("traceparent", f"00-{T32}-{S16}-00"), ("b3", f"{T16}-{S16}-1")),
    h(("traceparent", "bad"), ("b3", f"{T16}-{S16}-1")),
    h(("user-agent", "curl")),
    [],
]
CONFIGS = [
    ["tracecontext"],
    ["b3"],
    ["b3multi"],
    ["tracecontext", "b3multi"],
    ["b3", "tracecontext"],
    ["b3", "b3multi", "tracecontext"],
]


@pytest.mark.parametrize("names", CONFIGS, ids="+".join)
@pytest.mark.parametrize("headers", W3C + B3 + MIXED)
def test_the_parent_is_the_one_otel_extracts(names: list[str], headers: Headers) -> None:
    expected = otel_extract(names, headers)
    found = Propagation(names).extract(headers)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert (found.trace_id, found.span_id) == (expected.trace_id, expected.span_id)
    assert found.flags == expected.trace_flags
    assert found.sampled == expected.trace_flags.sampled
    state = found.state.to_header() if found.state is not None else ""
    assert state == expected.trace_state.to_header()
