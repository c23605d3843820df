"""What happens when a downstream request completes: the access log line and the server metrics."""

from __future__ import annotations

import time

from exporters.access_log import AccessLog
from exporters.instruments import Instruments
from exporters.names import HTTP_METHODS
from proxy.http.model import Request

_SCHEMES = {b"http": "http", b"https": "https"}  # looked up, not decoded, per request


class Completion:
    """A listener's on_complete hook; both parts are optional and decided at config time."""

    __slots__ = ("_access", "_duration", "_flags")

    def __init__(self, access: AccessLog | None, instruments: Instruments | None) -> None:
        self._access = access
        self._duration = instruments.server_duration if instruments is not None else None
        self._flags = instruments.response_flags if instruments is not None else None

    def __call__(self, request: Request, status: int, error: BaseException | None) -> None:
        duration = self._duration
        if duration is not None:
            info = request.info
            error_type = None
            if status >= 500 or error is not None:
                error_type = type(error).__name__ if error else str(status)
            scheme = request.scheme
            duration.record(
                (
                    HTTP_METHODS.get(request.method, "_OTHER"),
                    _SCHEMES.get(scheme) or scheme.decode("latin-1"),
                    status,
                    request.http_version,
                    info.route_name,
                    error_type,
                ),
                time.monotonic() - info.start,
            )
        if self._flags is not None and request.info.response_flags:
            for flag in request.info.response_flags:  # only failed requests pay for this
                self._flags.add((flag,))
        if self._access is not None:
            self._access.record(request, status, error)
