"""A bounded span processor: spans that do not fit the export queue are dropped and counted."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from proxy.stats import Stats

_MAX_BATCH = 512  # the SDK's default export batch size
BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0  # seconds without export attempts after a failure

log = logging.getLogger(__name__)


class SpanAccounts:
    """The telemetry.* counters of one Telemetry, bumped from the trio thread and exporter threads.

    `Counter.value += n` is not atomic across threads, so every bump here holds one lock.
    """

    def __init__(self, stats: Stats) -> None:
        self.lock = threading.Lock()
        self.dropped = stats.counter("telemetry.spans_dropped")
        self.exported = stats.counter("telemetry.spans_exported")
        self.failed = stats.counter("telemetry.spans_export_failed")
        self.closed = False  # set once the owner starts closing: later spans are dropped

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def outcome(self, count: int, ok: bool) -> None:
        with self.lock:
            (self.exported if ok else self.failed).value += count


class ExportBackoff:
    """After a failed export, further exports fail at once (counted, never encoded or sent) for
    a back-off that doubles from 1 s to 30 s while failures continue: a dead collector then
    costs the proxy nothing but the count. One warning when exports start failing, one when
    they recover. Used from one export thread."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._backoff = 0.0  # seconds; 0 while the endpoint is healthy
        self._resume_at = 0.0

    def waiting(self) -> bool:
        return bool(self._backoff) and self._clock() < self._resume_at

    def record(self, ok: bool, why: object = None) -> None:
        if ok:
            if self._backoff:
                log.warning("telemetry: %s exports again", self._name)
            self._backoff = 0.0
            return
        if not self._backoff:
            log.warning("telemetry: %s failed (%r); backing off", self._name, why)
        self._backoff = min(max(self._backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
        self._resume_at = self._clock() + self._backoff


class GuardedExporter(SpanExporter):
    """Tells its processor when a batch has left the queue, counts how the export went, and
    backs off from an endpoint that fails (ExportBackoff)."""

    def __init__(
        self,
        inner: SpanExporter,
        taken: Callable[[int], None],
        accounts: SpanAccounts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._taken = taken
        self._accounts = accounts
        self._backoff = ExportBackoff(type(inner).__name__, clock)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The batch processor pops a batch off its queue before calling export, so the
        # processor's in-flight count never falls below the real queue length.
        self._taken(len(spans))
        if self._backoff.waiting():
            self._accounts.outcome(len(spans), False)
            return SpanExportResult.FAILURE
        error: Exception | None = None
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # e.g. the Zipkin exporter lets requests' errors escape
            error, result = exc, SpanExportResult.FAILURE
        ok = result is SpanExportResult.SUCCESS
        self._accounts.outcome(len(spans), ok)
        self._backoff.record(ok, error or result)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class BoundedSpanProcessor(SpanProcessor):
    """A BatchSpanProcessor behind an admission check of its own.

    The SDK's processor silently evicts the oldest span when its queue is full and offers no
    public count of it. Here a span is admitted only while fewer than `capacity` spans are
    waiting (admitted but not yet handed to the exporter); otherwise it is dropped and counted.
    Because the in-flight count is never below the queue's real length, the inner queue
    (of the same capacity) never overflows, so every lost span is counted exactly once.
    `on_end` only takes a lock and appends to a deque: it never blocks on the exporter.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        capacity: int,
        accounts: SpanAccounts,
        meter_provider: MeterProvider | None = None,
        schedule_delay_millis: float | None = None,
    ) -> None:
        self._capacity = capacity
        self._accounts = accounts
        self._inflight = 0
        self._batch = BatchSpanProcessor(
            GuardedExporter(exporter, self._taken, accounts),
            max_queue_size=capacity,
            max_export_batch_size=min(_MAX_BATCH, capacity),
            schedule_delay_millis=schedule_delay_millis,
            meter_provider=meter_provider,
        )

    @property
    def inflight(self) -> int:
        """Spans admitted and not yet handed to the exporter."""
        return self._inflight

    def _taken(self, count: int) -> None:
        with self._accounts.lock:
            self._inflight -= count

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        accounts = self._accounts
        with accounts.lock:
            if accounts.closed or self._inflight >= self._capacity:
                accounts.dropped.value += 1
                return
            self._inflight += 1
        self._batch.on_end(span)

    def shutdown(self) -> None:
        self._accounts.close()
        self._batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)
