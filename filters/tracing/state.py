"""The per-request trace state the tracing filter hands to the upstream side (on StreamInfo)."""

from __future__ import annotations

import random

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from filters.tracing.propagation import Propagation

_random = random.Random()


def new_trace_id() -> int:
    while not (n := _random.getrandbits(128)):
        pass
    return n


def new_span_id() -> int:
    while not (n := _random.getrandbits(64)):
        pass
    return n


def unsampled(parent: trace.SpanContext | None) -> trace.NonRecordingSpan:
    """A span nobody records that still carries ids and the not-sampled decision downstream."""
    if parent is None:
        flags = trace.TraceFlags(trace.TraceFlags.RANDOM_TRACE_ID)  # W3C level 2: ours is random
        return trace.NonRecordingSpan(
            trace.SpanContext(new_trace_id(), new_span_id(), is_remote=False, trace_flags=flags)
        )
    return trace.NonRecordingSpan(
        trace.SpanContext(
            parent.trace_id,
            new_span_id(),
            is_remote=False,
            trace_flags=trace.TraceFlags(parent.trace_flags & ~trace.TraceFlags.SAMPLED),
            trace_state=parent.trace_state,
        )
    )


class RequestTrace:
    """The SERVER span's context, the tracer and the listener's propagators."""

    __slots__ = ("context", "propagation", "span_context", "tracer")

    def __init__(self, tracer: trace.Tracer, propagation: Propagation, span: trace.Span) -> None:
        self.tracer = tracer
        self.propagation = propagation
        self.span_context = span.get_span_context()
        self.context = trace.set_span_in_context(span)

    @property
    def sampled(self) -> bool:
        return self.span_context.trace_flags.sampled

    def client_span(self, name: str, attributes: dict[str, AttributeValue]) -> trace.Span:
        """A CLIENT child of the SERVER span; unsampled requests only get fresh ids."""
        if not self.sampled:
            return unsampled(self.span_context)
        return self.tracer.start_span(
            name, context=self.context, kind=trace.SpanKind.CLIENT, attributes=attributes
        )
