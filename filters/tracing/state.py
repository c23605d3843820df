"""The per-request trace state the tracing filter hands to the upstream side (on StreamInfo)."""

from __future__ import annotations

import random

from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from exporters.spans import RecordingSpan, SpanRecorder
from filters.tracing.propagation import Propagation
from proxy.http.model import Headers

_random = random.Random()


def new_trace_id() -> int:
    while not (n := _random.getrandbits(128)):
        pass
    return n


def new_span_id() -> int:
    while not (n := _random.getrandbits(64)):
        pass
    return n


class RequestTrace:
    """This hop's trace: its ids, trace flags and state, the listener's propagators and, when
    sampled, the recorder and the SERVER span's context.

    An unsampled request pays for this object only: a trace id of 0 (a root not sampled) or a
    span id of 0 is minted when something first asks for it (an upstream attempt, the access
    log, a pub/sub envelope), and no SpanContext exists unless `span_context` is read.
    """

    __slots__ = (
        "_context",
        "_span_id",
        "_trace_id",
        "flags",
        "propagation",
        "recorder",
        "trace_state",
    )

    def __init__(
        self,
        recorder: SpanRecorder | None,
        propagation: Propagation,
        trace_id: int,
        span_id: int,
        flags: int,
        trace_state: TraceState | None = None,
        context: SpanContext | None = None,
    ) -> None:
        self.recorder = recorder
        self.propagation = propagation
        self._trace_id = trace_id
        self._span_id = span_id
        self.flags = flags
        self.trace_state = trace_state
        self._context = context

    @classmethod
    def of(
        cls, recorder: SpanRecorder | None, propagation: Propagation, context: SpanContext
    ) -> RequestTrace:
        """The state of a span already made (the SERVER span of a sampled request)."""
        return cls(
            recorder,
            propagation,
            context.trace_id,
            context.span_id,
            context.trace_flags,
            context.trace_state,
            context,
        )

    @property
    def sampled(self) -> bool:
        return self.recorder is not None

    @property
    def trace_id(self) -> int:
        if not self._trace_id:
            self._trace_id = new_trace_id()
        return self._trace_id

    @property
    def span_id(self) -> int:
        """This hop's (the SERVER span's) id."""
        if not self._span_id:
            self._span_id = new_span_id()
        return self._span_id

    @property
    def span_context(self) -> SpanContext:
        """This hop's ids as an OTel SpanContext (made on first use)."""
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                self.trace_id, self.span_id, False, TraceFlags(self.flags), self.trace_state
            )
        return context

    def inject(self, headers: Headers, span_id: int) -> Headers:
        """`headers` carrying this trace to a child whose span id is `span_id`."""
        return self.propagation.inject(
            headers, self.trace_id, span_id, self.flags, self.trace_state
        )

    def client_span(
        self, name: str, attributes: dict[str, AttributeValue]
    ) -> tuple[SpanContext, RecordingSpan | None]:
        """A CLIENT child of the SERVER span (recorded only when sampled) and its ids."""
        parent = self.span_context
        context = SpanContext(
            parent.trace_id, new_span_id(), False, parent.trace_flags, parent.trace_state
        )
        recorder = self.recorder
        if recorder is None:
            return context, None
        span = recorder.start(name, SpanKind.CLIENT, context, parent, attributes)
        return context, span
