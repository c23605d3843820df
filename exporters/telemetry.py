"""Telemetry: the one tracer/meter handle, built from config and passed down (no OTel globals)."""

from __future__ import annotations

from opentelemetry.metrics import Histogram, Meter, MeterProvider, UpDownCounter
from opentelemetry.trace import Tracer, TracerProvider

from exporters import names
from proxy.version import VERSION

SCOPE = "meshwire"


class Instruments:
    """The metric instruments the data plane records into, created once per Telemetry."""

    def __init__(self, meter: Meter) -> None:
        self.server_duration: Histogram = meter.create_histogram(
            names.HTTP_SERVER_DURATION,
            unit="s",
            description="Duration of HTTP server requests (downstream), until the response ended.",
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )
        self.client_duration: Histogram = meter.create_histogram(
            names.HTTP_CLIENT_DURATION,
            unit="s",
            description="Duration of HTTP client requests (one upstream attempt each).",
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )
        self.active_requests: UpDownCounter = meter.create_up_down_counter(
            names.HTTP_SERVER_ACTIVE,
            unit="{request}",
            description="Number of HTTP server requests in flight.",
        )


class Telemetry:
    """Tracer, meter and instruments; `build` makes one from config with its exporters.

    Tests construct it directly from providers (e.g. an SDK TracerProvider with an in-memory
    exporter). Only the CLI may install it as the OpenTelemetry global.
    """

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer: Tracer = tracer_provider.get_tracer(SCOPE, VERSION)
        self.meter: Meter = meter_provider.get_meter(SCOPE, VERSION)
        self.instruments = Instruments(self.meter)
