"""Extract and inject trace context over our bytes header lists with the configured propagators."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.trace import TraceState

from filters.tracing import parse
from filters.tracing.parse import SAMPLED, Parent
from proxy.http.model import Headers

_EXTRACT: dict[str, Callable[[Headers], Parent | None]] = {
    "tracecontext": parse.tracecontext,
    "b3": parse.b3,
    "b3multi": parse.b3,
}
# The fields each format's OTel propagator reads or writes.
_FIELDS = {
    "tracecontext": (b"traceparent", b"tracestate"),
    "b3": (b"b3",),
    "b3multi": (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled"),
}
# B3 fields the OTel propagators never inject but a stale copy of which must not travel on.
_B3_EXTRA = frozenset({b"x-b3-parentspanid", b"x-b3-flags", b"b3", b"x-b3-sampled"})


class Propagation:
    """The listener's propagators: extraction tries them in order, injection writes them all.

    Both read and write our header lists directly, into and from plain ints, exactly as the
    OTel propagators would (tests pin both), without an OTel Context per request.
    """

    __slots__ = ("_b3", "_b3multi", "_b3single", "_extract", "_fields", "_tracecontext")

    def __init__(self, names: Sequence[str]) -> None:
        unique = list(dict.fromkeys(names))
        self._extract = [_EXTRACT[name] for name in unique]
        fields = {f for name in unique for f in _FIELDS[name]}
        self._b3 = any(name.startswith("b3") for name in unique)
        if self._b3:
            fields |= _B3_EXTRA
        self._fields = frozenset(fields)
        self._tracecontext = "tracecontext" in unique
        self._b3single = "b3" in unique
        self._b3multi = "b3multi" in unique

    def present(self, headers: Headers) -> bool:
        """Whether any field these propagators read is present (most requests carry none)."""
        return not self._fields.isdisjoint([name for name, _ in headers])

    def extract(self, headers: Headers) -> Parent | None:
        """The first valid remote parent found, or None.

        Both B3 propagators read the single `b3` header before `x-b3-*` (the B3 spec's precedence).
        """
        for extract in self._extract:
            parent = extract(headers)
            if parent is not None:
                return parent
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

    def inject(
        self,
        headers: Headers,
        trace_id: int,
        span_id: int,
        flags: int,
        trace_state: TraceState | None = None,
    ) -> Headers:
        """`headers` without any previous propagation fields, plus these ids' (a span of
        `trace_id` with id `span_id`, and those trace flags and state)."""
        fields = self._fields
        out = [h for h in headers if h[0] not in fields]
        trace_hex = b"%032x" % trace_id
        span_hex = b"%016x" % span_id
        if self._tracecontext:
            out.append((b"traceparent", b"00-%s-%s-%02x" % (trace_hex, span_hex, flags)))
            if trace_state:
                out.append((b"tracestate", trace_state.to_header().encode()))
        sampled = b"1" if flags & SAMPLED else b"0"
        if self._b3single:
            out.append((b"b3", b"%s-%s-%s" % (trace_hex, span_hex, sampled)))
        if self._b3multi:
            out.append((b"x-b3-traceid", trace_hex))
            out.append((b"x-b3-spanid", span_hex))
            out.append((b"x-b3-sampled", sampled))
        return out
