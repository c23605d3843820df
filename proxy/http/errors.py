"""ProxyError: every locally made error, with its HTTP status and Envoy-style response flag."""

from __future__ import annotations


class ProxyError(Exception):
    """An error meshwire answers itself.

    `status` is the HTTP status sent downstream, `flag` the Envoy response flag that explains it
    in the access log and the `x-meshwire-response-flags` header (None for plain client errors),
    `code` a stable machine-readable detail (Envoy's "response code details").
    """

    status = 500
    flag: str | None = None
    code = "internal_error"

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message or self.code)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class BadRequest(ProxyError):
    status = 400
    flag = "DPE"
    code = "downstream_protocol_error"


class HeadersTooLarge(BadRequest):
    status = 431
    code = "request_headers_too_large"


class RequestTooLarge(ProxyError):
    status = 413
    code = "request_payload_too_large"


class RequestTimeout(ProxyError):
    status = 408
    flag = "DT"
    code = "request_timeout"


class NoRoute(ProxyError):
    status = 404
    flag = "NR"
    code = "route_not_found"


class NoCluster(ProxyError):
    status = 503
    flag = "NC"
    code = "cluster_not_found"


class NoHealthyUpstream(ProxyError):
    status = 503
    flag = "UH"
    code = "no_healthy_upstream"


class UpstreamConnectFailure(ProxyError):
    status = 503
    flag = "UF"
    code = "upstream_connect_failure"


class UpstreamOverflow(ProxyError):
    status = 503
    flag = "UO"
    code = "upstream_overflow"


class UpstreamReset(ProxyError):
    """The upstream reset the stream or closed the connection before a complete response."""

    status = 503
    flag = "UC"
    code = "upstream_reset_before_response_started"


class UpstreamRemoteReset(UpstreamReset):
    flag = "UR"
    code = "upstream_remote_reset"


class UpstreamProtocolError(ProxyError):
    status = 502
    flag = "UPE"
    code = "upstream_protocol_error"


class UpstreamTimeout(ProxyError):
    status = 504
    flag = "UT"
    code = "upstream_response_timeout"


class RetryLimitExceeded(ProxyError):
    status = 503
    flag = "URX"
    code = "upstream_retry_limit_exceeded"


class DownstreamDisconnect(ProxyError):
    """The client went away; nothing can be sent, the flag is for the log."""

    status = 499
    flag = "DC"
    code = "downstream_remote_disconnect"


class StreamIdleTimeout(ProxyError):
    status = 408
    flag = "SI"
    code = "stream_idle_timeout"


class DaprApiError(ProxyError):
    """An error of Dapr's APIs, rendered as Dapr renders it: {"errorCode", "message"}."""

    code = "dapr_api_error"

    def __init__(
        self, error_code: str, message: str, *, status: int = 500, flag: str | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.error_code = error_code
        if flag is not None:
            self.flag = flag
