"""The one place where exceptions become responses: typed errors keep their status and flag."""

from __future__ import annotations

import json
import logging

from proxy.chain import Handler
from proxy.http.errors import DaprApiError, ProxyError
from proxy.http.model import Request, Response, StreamInfo

FLAGS_HEADER = b"x-meshwire-response-flags"

log = logging.getLogger("meshwire.rescue")


def error_response(err: ProxyError, info: StreamInfo | None = None) -> Response:
    """Render a ProxyError: JSON body with the detail code, flag header, flag recorded on info."""
    headers = [(b"content-type", b"application/json")]
    if err.flag:
        headers.append((FLAGS_HEADER, err.flag.encode()))
        if info is not None:
            info.add_flag(err.flag)
    if isinstance(err, DaprApiError):
        fields = {"errorCode": err.error_code, "message": err.message}
    else:
        fields = {"error": err.code, "message": err.message}
    body = json.dumps(fields).encode() + b"\n"
    headers.append((b"content-length", str(len(body)).encode()))
    from proxy.http.model import BytesBody

    return Response(err.status, headers, BytesBody(body))


def rescue(exc: Exception, info: StreamInfo | None = None) -> Response:
    """Any exception from a handler → a response. Unexpected ones are logged, never shown."""
    if isinstance(exc, ProxyError):
        return error_response(exc, info)
    log.exception("unhandled error while serving a request", exc_info=exc)
    return error_response(ProxyError("internal error"), info)


class RescueFilter:
    """First link of every chain: nothing escapes it except cancellation."""

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        try:
            return await next(request)
        except Exception as exc:  # the one broad catch, by design
            return rescue(exc, request.info)
