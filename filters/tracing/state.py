"""The per-request trace state the tracing filter hands to the upstream side (on StreamInfo)."""

from __future__ import annotations

import random

from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import AttributeValue

from exporters.spans import RecordingSpan, SpanRecorder
from filters.tracing.propagation import Propagation

_random = random.Random()
# W3C Trace Context level 2: the trace ids we mint are random, and say so.
_ROOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_ROOT_UNSAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)


def new_trace_id() -> int:
    while not (n := _random.getrandbits(128)):
        pass
    return n


def new_span_id() -> int:
    while not (n := _random.getrandbits(64)):
        pass
    return n


def server_context(parent: SpanContext | None, sampled: bool) -> SpanContext:
    """This hop's ids: a fresh trace for a root, else the parent's trace with the decision made."""
    if parent is None:
        flags = _ROOT_SAMPLED if sampled else _ROOT_UNSAMPLED
        return SpanContext(new_trace_id(), new_span_id(), False, flags)
    flags = parent.trace_flags
    flags = TraceFlags(flags | TraceFlags.SAMPLED if sampled else flags & ~TraceFlags.SAMPLED)
    return SpanContext(parent.trace_id, new_span_id(), False, flags, parent.trace_state)


class RequestTrace:
    """The SERVER span's ids, the listener's propagators and, when sampled, the recorder."""

    __slots__ = ("propagation", "recorder", "span_context")

    def __init__(
        self,
        recorder: SpanRecorder | None,
        propagation: Propagation,
        span_context: SpanContext,
    ) -> None:
        self.recorder = recorder
        self.propagation = propagation
        self.span_context = span_context

    @property
    def sampled(self) -> bool:
        return self.recorder is not None

    def child_context(self) -> SpanContext:
        """A fresh span id in this trace, with the same flags and trace state."""
        parent = self.span_context
        return SpanContext(
            parent.trace_id, new_span_id(), False, parent.trace_flags, parent.trace_state
        )

    def client_span(
        self, name: str, attributes: dict[str, AttributeValue]
    ) -> tuple[SpanContext, RecordingSpan | None]:
        """A CLIENT child of the SERVER span (recorded only when sampled) and its ids."""
        context = self.child_context()
        recorder = self.recorder
        if recorder is None:
            return context, None
        span = recorder.start(name, SpanKind.CLIENT, context, self.span_context, attributes)
        return context, span
