"""Telemetry: the one tracer/meter handle, built from config and passed down (no OTel globals)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from functools import partial

import trio
from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    NoOpMeterProvider,
    Observation,
)
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import NoOpTracerProvider, Tracer, TracerProvider
from prometheus_client import CollectorRegistry

from config import schema
from exporters import names
from exporters.instruments import Instruments
from exporters.prometheus_text import render_registry
from exporters.span_queue import SpanAccounts
from exporters.spans import SpanRecorder
from proxy.stats import Gauge, Stats
from proxy.version import VERSION

CLOSE_TIMEOUT = 5.0  # default bound, in seconds, on flush() and aclose()

log = logging.getLogger(__name__)


class Telemetry:
    """Tracer, meter, instruments and the span recorder; `build` makes one from config.

    The data plane records into `instruments` (plain objects, exporters/instruments.py); the
    meter provider's readers built by `build` read them when they collect. Tests construct it
    directly from providers (e.g. an SDK TracerProvider with an in-memory exporter, and a
    SpanRecorder over the same processors). Only the CLI may install it as the OpenTelemetry
    global.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        *,
        registry: CollectorRegistry | None = None,
        accounts: SpanAccounts | None = None,
        spans: SpanRecorder | None = None,
        instruments: Instruments | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.spans = spans  # the data plane's span path; None: no span is recorded
        self.meter_provider = meter_provider
        self.tracer: Tracer = tracer_provider.get_tracer(names.SCOPE, VERSION)
        self.meter: Meter = meter_provider.get_meter(names.SCOPE, VERSION)
        self.instruments = instruments if instruments is not None else Instruments()
        self._registry = registry
        self._accounts = accounts
        self._closed = False
        self.close_timeout = CLOSE_TIMEOUT  # seconds flush() and aclose() may take at most
        if accounts is not None:
            self.meter.create_observable_counter(
                names.SPANS_DROPPED,
                callbacks=[self._observe_dropped],
                unit="{span}",
                description="Spans dropped because an exporter's queue was full.",
            )

    @classmethod
    def build(cls, config: schema.Telemetry, stats: Stats) -> Telemetry:
        """Providers and exporters from config; the telemetry.* counters go into `stats`."""
        from exporters.metrics_setup import build_meter_provider
        from exporters.resource import build_resource
        from exporters.tracing_setup import build_tracer_provider

        resource = build_resource(config)
        accounts = SpanAccounts(stats)
        instruments = Instruments()
        meter_provider, registry = build_meter_provider(config, resource, instruments)
        tracer_provider, spans = build_tracer_provider(config, resource, accounts, meter_provider)
        return cls(
            tracer_provider,
            meter_provider,
            registry=registry,
            accounts=accounts,
            spans=spans,
            instruments=instruments,
        )

    def observe_active_requests(self, gauges: Mapping[str, Gauge]) -> None:
        """http.server.active_requests, read from the codecs' per-listener gauges at collection
        time: the hot path pays nothing for it."""

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(g.value, {names.LISTENER: name}) for name, g in gauges.items()]

        self.meter.create_observable_up_down_counter(
            names.HTTP_SERVER_ACTIVE,
            callbacks=[observe],
            unit="{request}",
            description="Number of HTTP server requests in flight.",
        )

    @classmethod
    def noop(cls) -> Telemetry:
        """No spans, no metrics, nothing to close: for code paths and tests without telemetry."""
        return cls(NoOpTracerProvider(), NoOpMeterProvider())

    @property
    def spans_dropped(self) -> int:
        """Spans lost because an exporter's queue was full (or ended after shutdown)."""
        return self._accounts.dropped.value if self._accounts is not None else 0

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.spans_dropped)]

    def prometheus_text(self, exclude: Collection[str] = ()) -> str:
        """The OTel metrics in Prometheus text format 0.0.4 ("" without a registry).

        Families using any name in `exclude` are left out, so a caller merging its own
        families into one exposition never repeats a metric name.
        """
        if self._registry is None:
            return ""
        return render_registry(self._registry, exclude)

    async def flush(self) -> None:
        """Export what is queued now (spans, and metrics to push exporters), off the trio thread."""
        timeout = self.close_timeout
        with trio.move_on_after(timeout):
            await trio.to_thread.run_sync(
                partial(_flush, self.tracer_provider, self.meter_provider, timeout),
                abandon_on_cancel=True,
            )

    async def aclose(self) -> None:
        """Flush and shut both providers down; bounded, shielded from cancellation, never raises.

        If the bound expires (an exporter hangs) the closing thread is abandoned, not joined.
        """
        if self._closed:
            return
        self._closed = True
        timeout = self.close_timeout
        if self._accounts is not None:
            self._accounts.close()  # spans ended from now on are dropped (and counted)
        if not isinstance(self.tracer_provider, SdkTracerProvider) and not isinstance(
            self.meter_provider, SdkMeterProvider
        ):
            return
        with trio.move_on_after(timeout, shield=True) as scope:
            try:
                await trio.to_thread.run_sync(
                    partial(_close, self.tracer_provider, self.meter_provider, timeout),
                    abandon_on_cancel=True,
                )
            except Exception:
                log.exception("telemetry: closing the exporters failed")
        if scope.cancelled_caught:
            log.warning("telemetry: exporters did not shut down within %ss", timeout)


def _flush(tracer_provider: TracerProvider, meter_provider: MeterProvider, timeout: float) -> None:
    millis = int(timeout * 1000)
    if isinstance(tracer_provider, SdkTracerProvider):
        tracer_provider.force_flush(millis)
    if isinstance(meter_provider, SdkMeterProvider):
        meter_provider.force_flush(millis)


def _close(tracer_provider: TracerProvider, meter_provider: MeterProvider, timeout: float) -> None:
    """Runs on a worker thread: each step guarded so one failure does not skip the rest."""
    millis = int(timeout * 1000)
    if isinstance(tracer_provider, SdkTracerProvider):
        for step in (partial(tracer_provider.force_flush, millis), tracer_provider.shutdown):
            try:
                step()
            except Exception:
                log.exception("telemetry: tracer provider %s failed", step)
    if isinstance(meter_provider, SdkMeterProvider):
        try:
            meter_provider.shutdown(millis)  # collects and pushes one last time
        except Exception:
            log.exception("telemetry: meter provider shutdown failed")
