"""An exporter that is down or never answers never blocks trio; what does not fit is counted."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import trio
import trio.lowlevel
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from config import schema
from exporters.span_queue import GuardedExporter, SpanAccounts
from exporters.telemetry import Telemetry
from exporters.zipkin_processor import THREAD_NAME as ZIPKIN_THREAD
from proxy.stats import Stats
from tests.exporters.receivers import closed_port, silent_port, wait_until

QUEUE = 64
SPANS = 3000
CHUNK = 100


async def end_spans_while_ticking(telemetry: Telemetry) -> int:
    """End SPANS spans in chunks, yielding between chunks; return how often a peer task ran."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        for start in range(0, SPANS, CHUNK):
            for n in range(start, start + CHUNK):
                with telemetry.tracer.start_as_current_span(f"span-{n}"):
                    pass
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    return ticks


def counts(stats: Stats) -> tuple[int, int, int]:
    def value(name: str) -> int:
        return stats.counter(f"telemetry.{name}").value

    return value("spans_dropped"), value("spans_exported"), value("spans_export_failed")


def batch_threads() -> list[threading.Thread]:
    names = ("OtelBatch", ZIPKIN_THREAD)
    return [t for t in threading.enumerate() if t.name.startswith(names)]


def zipkin(port: int, timeout: float) -> schema.Telemetry:
    return schema.Telemetry(
        zipkin=schema.ZipkinExporter(
            endpoint=f"http://127.0.0.1:{port}/api/v2/spans", timeout=schema.Duration(timeout)
        ),
        max_queue_size=QUEUE,
    )


async def test_exporter_down_fails_fast_and_every_span_is_accounted_for() -> None:
    stats = Stats()
    telemetry = Telemetry.build(zipkin(closed_port(), 1.0), stats)
    ticks = await end_spans_while_ticking(telemetry)
    await telemetry.aclose()
    dropped, exported, failed = counts(stats)
    assert ticks >= SPANS // CHUNK // 2  # the loop kept running other tasks
    assert exported == 0
    assert failed >= 1
    assert dropped + failed == SPANS  # each span either did not fit or was in a failed batch
    assert telemetry.spans_dropped == dropped


async def test_exporter_that_never_answers_drops_what_does_not_fit_and_close_is_bounded() -> None:
    stats = Stats()
    with silent_port() as port:
        telemetry = Telemetry.build(zipkin(port, 600.0), stats)
        ticks = await end_spans_while_ticking(telemetry)
        # One batch (at most QUEUE spans) is stuck in the exporter; at most QUEUE more wait.
        dropped, exported, failed = counts(stats)
        assert ticks >= SPANS // CHUNK // 2
        assert SPANS - 2 * QUEUE <= dropped <= SPANS - QUEUE
        assert (exported, failed) == (0, 0)
        telemetry.close_timeout = 0.2
        await telemetry.aclose()  # gives up on the hung exporter, does not raise
        with telemetry.tracer.start_as_current_span("after close"):
            pass
        assert counts(stats)[0] == dropped + 1  # ended after shutdown: dropped, counted
    # The listener is gone: the stuck request is reset and the abandoned shutdown completes.
    await wait_until(lambda: not batch_threads(), "the batch thread to finish")
    dropped, exported, failed = counts(stats)
    assert exported == 0
    assert dropped + failed == SPANS + 1


class Flaky(SpanExporter):
    """An exporter whose endpoint is down until `up` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.up = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if not self.up:
            raise ConnectionError("connection refused")
        return SpanExportResult.SUCCESS


def test_a_failing_endpoint_is_not_tried_again_until_its_backoff_has_passed() -> None:
    now = 100.0
    stats = Stats()
    flaky = Flaky()
    taken: list[int] = []
    guarded = GuardedExporter(flaky, taken.append, SpanAccounts(stats), clock=lambda: now)
    batch = [ReadableSpan("op")] * 4

    def attempt(advance: float) -> tuple[SpanExportResult, int]:
        nonlocal now
        now += advance
        return guarded.export(batch), flaky.calls

    failure, success = SpanExportResult.FAILURE, SpanExportResult.SUCCESS
    assert attempt(0) == (failure, 1)  # tried, failed: back off 1 s
    assert attempt(0.9) == (failure, 1)  # within the back-off: failed without trying
    assert attempt(0.2) == (failure, 2)  # tried again, failed: back off 2 s
    assert attempt(1.5) == (failure, 2)
    flaky.up = True
    assert attempt(0.6) == (success, 3)  # tried after 2.1 s, and it is back
    assert attempt(0) == (success, 4)  # healthy: every batch is tried
    assert sum(taken) == 6 * len(batch)
    _, exported, failed = counts(stats)
    assert (exported, failed) == (2 * len(batch), 4 * len(batch))
