"""Per upstream attempt: a CLIENT span with injected context, and the client duration metric."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from opentelemetry.util.types import AttributeValue

from exporters import names
from exporters.spans import RecordingSpan
from exporters.telemetry import Telemetry
from filters.tracing.attributes import method_name, span_method
from filters.tracing.body import EndingBody
from filters.tracing.state import new_span_id
from proxy.http.model import Request, Response, in_memory


class Upstream:
    """Where an attempt goes: fixed per host, so built once by the cluster."""

    __slots__ = ("address", "cluster", "origin", "port")

    def __init__(self, cluster: str, address: str, port: int, tls: bool) -> None:
        self.cluster = cluster
        self.address = address
        self.port = port
        host = f"[{address}]" if ":" in address else address
        self.origin = f"{'https' if tls else 'http'}://{host}:{port}"


class _Attempt:
    """Ends one attempt's span and records its duration, once."""

    __slots__ = ("duration", "method", "span", "start", "status", "upstream")

    def __init__(
        self, telemetry: Telemetry, method: str, upstream: Upstream, span: RecordingSpan | None
    ) -> None:
        self.duration = telemetry.instruments.client_duration
        self.method = method
        self.upstream = upstream
        self.span = span
        self.status: int | None = None
        self.start = time.monotonic()

    def __call__(self, error: BaseException | None) -> None:
        status = self.status
        error_type = None
        if error is not None:
            error_type = type(error).__name__
        elif status is not None and status >= 400:
            error_type = str(status)
        upstream = self.upstream
        self.duration.record(
            (self.method, upstream.address, upstream.port, status, error_type),
            time.monotonic() - self.start,
        )
        span = self.span
        if span is None:
            return
        if status is not None:
            span.set_attribute(names.HTTP_RESPONSE_STATUS_CODE, status)
        if error_type is not None:  # 4xx and 5xx are errors for CLIENT spans
            span.set_attribute(names.ERROR_TYPE, error_type)
            span.set_error()
        span.end()


async def observed_attempt(
    telemetry: Telemetry,
    request: Request,
    upstream: Upstream,
    resend: bool,
    send: Callable[[], Awaitable[Response]],
) -> Response:
    """Run `send()` as one attempt; the span ends when the response body ends or the send fails."""
    method = method_name(request.method)
    span: RecordingSpan | None = None
    state = request.info.trace
    if state is not None:
        if state.sampled:
            attributes: dict[str, AttributeValue] = {
                names.HTTP_REQUEST_METHOD: method,
                names.SERVER_ADDRESS: upstream.address,
                names.SERVER_PORT: upstream.port,
                names.URL_FULL: upstream.origin + request.target.decode("latin-1"),
                names.UPSTREAM_CLUSTER: upstream.cluster,
            }
            if resend:
                attributes[names.HTTP_RESEND_COUNT] = 1
            context, span = state.client_span(span_method(request.method), attributes)
            span_id = context.span_id
        else:
            span_id = new_span_id()
        # Replaces the previous hop's (or attempt's) fields: each attempt carries its own span id.
        request.headers = state.inject(request.headers, span_id)
    attempt = _Attempt(telemetry, method, upstream, span)
    try:
        response = await send()
    except BaseException as exc:
        attempt(exc)
        raise
    attempt.status = response.status
    if in_memory(response.body):
        attempt(None)
    else:
        response.body = EndingBody(response.body, attempt)
    return response
