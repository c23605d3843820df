"""Exceptions no Dapr API handler expected: one log line each, answered as daprd's unknown error."""

from __future__ import annotations

import logging

from filters.dapr.params import printable
from proxy.http.errors import DaprApiError

log = logging.getLogger("meshwire.dapr")

# daprd's fallback for an error it has no code for (kit/errors): 500, errorCode "ERROR".
ERR_UNKNOWN = "ERROR"


def unexpected(call: str, exc: BaseException) -> DaprApiError:
    """Log `exc` as ONE line naming the call and the line that raised it, and give the error
    to answer with. A client repeating the input that found a bug must not flood the log with
    a traceback per request; the traceback is logged at DEBUG."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f" (at {frame.tb_frame.f_code.co_filename}:{frame.tb_lineno})" if frame else ""
    detail = printable(str(exc)[:200])
    log.error("dapr api: %s failed: %s: %s%s", call, type(exc).__name__, detail, where)
    log.debug("dapr api: %s failed", call, exc_info=exc)
    return DaprApiError(ERR_UNKNOWN, "internal error", status=500)
