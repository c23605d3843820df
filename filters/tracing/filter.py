"""The tracing filter: extract the caller's context, run the request inside a SERVER span."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import partial

from opentelemetry import context, trace
from opentelemetry.context import Context

from exporters import names
from filters.tracing.attributes import server_attributes, span_method
from filters.tracing.body import EndingBody
from filters.tracing.propagation import Propagation
from filters.tracing.state import RequestTrace, unsampled
from proxy.chain import Handler
from proxy.http.errors import ProxyError
from proxy.http.model import Request, Response


class TracingFilter:
    """Parent-based ratio sampling decided here, per listener, not by the TracerProvider.

    The provider's sampler should record whatever it is handed (the SDK default, parent-based
    always-on, does): a sampled decision starts a real span, an unsampled one only mints ids so
    the not-sampled flag still travels downstream.
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        sampling_rate: float,
        propagators: Sequence[str],
        templates: Mapping[str, str],
    ) -> None:
        self._tracer = tracer
        self._rate = sampling_rate
        self._propagation = Propagation(propagators)
        self._templates = templates
        self._random = random.Random()

    def _sample_root(self) -> bool:
        rate = self._rate
        return rate >= 1.0 or (rate > 0.0 and self._random.random() < rate)

    def _start(self, request: Request) -> trace.Span:
        propagation = self._propagation
        parent = propagation.extract(request.headers)
        if parent is not None:
            sampled = parent.trace_flags.sampled
        else:
            sampled = not propagation.denied(request.headers) and self._sample_root()
        if not sampled:
            return unsampled(parent)
        ctx = (
            Context()
            if parent is None
            else trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())
        )
        return self._tracer.start_span(
            span_method(request.method),
            context=ctx,
            kind=trace.SpanKind.SERVER,
            attributes=server_attributes(request),
        )

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        span = self._start(request)
        if not span.get_span_context().is_valid:  # a no-op tracer: pass the context through
            return await next(request)
        state = RequestTrace(self._tracer, self._propagation, span)
        request.info.trace = state
        token = context.attach(state.context)
        try:
            response = await next(request)
        except BaseException as exc:
            self._end(span, request, None, exc)
            raise
        finally:
            context.detach(token)
        if span.is_recording():
            response.body = EndingBody(response.body, partial(self._end, span, request, response))
        return response

    def _end(
        self,
        span: trace.Span,
        request: Request,
        response: Response | None,
        error: BaseException | None,
    ) -> None:
        if not span.is_recording():
            return
        info = request.info
        template = self._templates.get(info.route_name) if info.route_name else None
        if template is not None:
            span.update_name(f"{span_method(request.method)} {template}")
            span.set_attribute(names.HTTP_ROUTE, template)
        flags = list(info.response_flags)
        status = response.status if response is not None else None
        error_type: str | None = None
        failed = False
        if isinstance(error, ProxyError) and error.flag and error.flag not in flags:
            flags.append(error.flag)
        if isinstance(error, ProxyError) and response is None:
            status = error.status  # the rescue filter answers with it: an ordinary response
        elif error is not None:
            error_type = type(error).__name__
            # Cancellation (the client left, the server drains) is not a server error.
            failed = isinstance(error, Exception)
            if failed and status is None:
                status = 500
            if failed and not isinstance(error, ProxyError):
                span.record_exception(error)
        if status is not None:
            span.set_attribute(names.HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 500:  # 4xx is not an error on a SERVER span
                failed = True
                error_type = error_type or str(status)
        if error_type is not None:
            span.set_attribute(names.ERROR_TYPE, error_type)
        if flags:
            span.set_attribute(names.RESPONSE_FLAGS_ATTR, ",".join(flags))
        if failed:
            span.set_status(trace.StatusCode.ERROR)
        span.end()
