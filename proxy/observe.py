"""What happens when a downstream request completes: the access log line and the server metrics."""

from __future__ import annotations

import time

from exporters import names
from exporters.access_log import AccessLog
from exporters.telemetry import Instruments
from proxy.http.model import Request

_KNOWN_METHODS = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"}
)


class Completion:
    """A listener's on_complete hook; both parts are optional and decided at config time."""

    __slots__ = ("_access", "_duration", "_flags")

    def __init__(self, access: AccessLog | None, instruments: Instruments | None) -> None:
        self._access = access
        self._duration = instruments.server_duration if instruments is not None else None
        self._flags = instruments.response_flags if instruments is not None else None

    def __call__(self, request: Request, status: int, error: BaseException | None) -> None:
        if self._duration is not None:
            info = request.info
            method = request.method
            attributes: dict[str, str | int] = {
                names.HTTP_REQUEST_METHOD: method.decode("latin-1")
                if method in _KNOWN_METHODS
                else "_OTHER",
                names.URL_SCHEME: request.scheme.decode("latin-1"),
                names.HTTP_RESPONSE_STATUS_CODE: status,
                names.NETWORK_PROTOCOL_VERSION: request.http_version,
            }
            if info.route_name is not None:
                attributes[names.HTTP_ROUTE] = info.route_name
            if status >= 500 or error is not None:
                attributes[names.ERROR_TYPE] = type(error).__name__ if error else str(status)
            self._duration.record(time.monotonic() - info.start, attributes)
        if self._flags is not None and request.info.response_flags:
            for flag in request.info.response_flags:  # only failed requests pay for this
                self._flags.add(1, {names.RESPONSE_FLAGS_ATTR: flag})
        if self._access is not None:
            self._access.record(request, status, error)
