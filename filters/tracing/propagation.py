"""Extract and inject trace context over our bytes header lists with the configured propagators."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.http.model import Headers

_FACTORIES: dict[str, type[TextMapPropagator]] = {
    "tracecontext": TraceContextTextMapPropagator,
    "b3": B3SingleFormat,
    "b3multi": B3MultiFormat,
}
# B3 fields the OTel propagators never inject but a stale copy of which must not travel on.
_B3_EXTRA = frozenset({b"x-b3-parentspanid", b"x-b3-flags", b"b3", b"x-b3-sampled"})


class HeaderGetter(Getter[Headers]):
    """Every value of a lower-case header name, decoded as latin-1."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.encode()
        found = [value.decode("latin-1") for k, value in carrier if k == name]
        return found or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


GETTER = HeaderGetter()


class Propagation:
    """The listener's propagators: extraction tries them in order, injection writes them all."""

    __slots__ = ("_b3", "_b3multi", "_b3single", "_fields", "_propagators", "_tracecontext")

    def __init__(self, names: Sequence[str]) -> None:
        unique = list(dict.fromkeys(names))
        self._propagators = [_FACTORIES[name]() for name in unique]
        fields = {f.encode() for p in self._propagators for f in p.fields}
        self._b3 = any(name.startswith("b3") for name in unique)
        if self._b3:
            fields |= _B3_EXTRA
        if "tracecontext" in unique:
            fields.add(b"tracestate")
        self._fields = frozenset(fields)
        self._tracecontext = "tracecontext" in unique
        self._b3single = "b3" in unique
        self._b3multi = "b3multi" in unique

    def present(self, headers: Headers) -> bool:
        """Whether any field these propagators read is present (most requests carry none)."""
        fields = self._fields
        return any(name in fields for name, _ in headers)

    def extract(self, headers: Headers) -> trace.SpanContext | None:
        """The first valid remote parent found, or None.

        Both B3 propagators read the single `b3` header before `x-b3-*` (the B3 spec's precedence).
        """
        for propagator in self._propagators:
            ctx = propagator.extract(headers, Context(), GETTER)
            span_context = trace.get_current_span(ctx).get_span_context()
            if span_context.is_valid:
                return span_context
        return None

    def denied(self, headers: Headers) -> bool:
        """B3's deny-only forms (`b3: 0`, or `x-b3-sampled: 0` without ids): do not sample."""
        if not self._b3:
            return False
        for name, value in headers:
            if name == b"b3" and value == b"0":
                return True
            if name == b"x-b3-sampled" and value in (b"0", b"false"):
                return True
        return False

    def inject(self, headers: Headers, span_context: trace.SpanContext) -> Headers:
        """`headers` without any previous propagation fields, plus this context's.

        The fields are written exactly as the OTel propagators write them (their tests pin
        that), without building an OTel Context per upstream attempt.
        """
        fields = self._fields
        out = [h for h in headers if h[0] not in fields]
        trace_id = f"{span_context.trace_id:032x}".encode()
        span_id = f"{span_context.span_id:016x}".encode()
        flags = span_context.trace_flags
        if self._tracecontext:
            out.append((b"traceparent", b"00-%s-%s-%02x" % (trace_id, span_id, flags)))
            if span_context.trace_state:
                out.append((b"tracestate", span_context.trace_state.to_header().encode()))
        sampled = b"1" if flags & trace.TraceFlags.SAMPLED else b"0"
        if self._b3single:
            out.append((b"b3", b"%s-%s-%s" % (trace_id, span_id, sampled)))
        if self._b3multi:
            out.append((b"x-b3-traceid", trace_id))
            out.append((b"x-b3-spanid", span_id))
            out.append((b"x-b3-sampled", sampled))
        return out
