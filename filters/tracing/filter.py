"""The tracing filter: extract the caller's context, run the request inside a SERVER span."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import partial

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)

from exporters import names
from exporters.spans import RecordingSpan, SpanRecorder
from filters.tracing.attributes import server_attributes, span_method
from filters.tracing.body import EndingBody
from filters.tracing.parse import SAMPLED, Parent
from filters.tracing.propagation import Propagation
from filters.tracing.state import RequestTrace, new_span_id, new_trace_id
from proxy.chain import Handler
from proxy.http.errors import ProxyError
from proxy.http.model import Headers, Request, Response

# W3C Trace Context level 2: the trace ids we mint are random, and say so.
RANDOM_TRACE_ID = 0x02
_ROOT_SAMPLED = TraceFlags(SAMPLED | RANDOM_TRACE_ID)


class TracingFilter:
    """Parent-based ratio sampling, decided here per listener.

    An incoming sampled flag is followed either way; without a parent, `sampling_rate` decides.
    An unsampled request still gets fresh ids so the not-sampled decision travels downstream.

    The decision comes first, from the headers (parsed into ints) or the random draw; an
    unsampled request then gets one RequestTrace and nothing else: no span, no attributes, no
    OTel context, and ids only if something forwards it.
    """

    def __init__(
        self,
        recorder: SpanRecorder,
        sampling_rate: float,
        propagators: Sequence[str],
        templates: Mapping[str, str],
    ) -> None:
        self._recorder = recorder
        self._rate = sampling_rate
        self._propagation = Propagation(propagators)
        self._templates = templates
        self._random = random.Random()

    def _sample_root(self) -> bool:
        rate = self._rate
        return rate >= 1.0 or (rate > 0.0 and self._random.random() < rate)

    def _decide(self, headers: Headers) -> tuple[Parent | None, bool]:
        """The remote parent (if any) and whether this request is sampled."""
        propagation = self._propagation
        if not propagation.present(headers):
            return None, self._sample_root()
        parent = propagation.extract(headers)
        if parent is not None:
            return parent, parent.sampled
        return None, not propagation.denied(headers) and self._sample_root()

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        parent, sampled = self._decide(request.headers)
        if not sampled:
            if parent is None:  # a new trace: its id is minted only if it goes anywhere
                trace = RequestTrace(None, self._propagation, 0, 0, RANDOM_TRACE_ID)
            else:
                flags = parent.flags & ~SAMPLED
                trace = RequestTrace(
                    None, self._propagation, parent.trace_id, 0, flags, parent.state
                )
            request.info.trace = trace
            return await next(request)
        remote: SpanContext | None = None
        if parent is None:
            context = SpanContext(new_trace_id(), new_span_id(), False, _ROOT_SAMPLED)
        else:
            flags = TraceFlags(parent.flags)
            remote = SpanContext(parent.trace_id, parent.span_id, True, flags, parent.state)
            context = SpanContext(parent.trace_id, new_span_id(), False, flags, parent.state)
        recorder = self._recorder
        span = recorder.start(
            span_method(request.method),
            SpanKind.SERVER,
            context,
            remote,
            server_attributes(request),
        )
        request.info.trace = RequestTrace.of(recorder, self._propagation, context)
        # OTel-instrumented code further down the chain parents its spans on this one.
        token = otel_context.attach(set_span_in_context(NonRecordingSpan(context)))
        try:
            response = await next(request)
        except BaseException as exc:
            self._end(span, request, None, exc)
            raise
        finally:
            otel_context.detach(token)
        response.body = EndingBody(response.body, partial(self._end, span, request, response))
        return response

    def _end(
        self,
        span: RecordingSpan,
        request: Request,
        response: Response | None,
        error: BaseException | None,
    ) -> None:
        if not span.is_recording():
            return
        info = request.info
        template = self._templates.get(info.route_name) if info.route_name else None
        if template is not None:
            span.name = f"{span_method(request.method)} {template}"
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
            span.set_error()
        span.end()
