"""Every metric, span and attribute name meshwire emits, in one place (OpenTelemetry semconv)."""

from __future__ import annotations

# --- metrics (histograms in seconds, semconv bucket boundaries) -----------------------------
HTTP_SERVER_DURATION = "http.server.request.duration"
HTTP_CLIENT_DURATION = "http.client.request.duration"
HTTP_SERVER_ACTIVE = "http.server.active_requests"
UPSTREAM_CONNECT_FAILURES = "meshwire.upstream.connect_failures"
UPSTREAM_RETRIES = "meshwire.upstream.retries"
RESPONSE_FLAGS = "meshwire.response_flags"
SPANS_DROPPED = "meshwire.telemetry.spans_dropped"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# --- span and metric attributes (stable HTTP semconv) ---------------------------------------
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_QUERY = "url.query"
URL_SCHEME = "url.scheme"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
USER_AGENT = "user_agent.original"
ERROR_TYPE = "error.type"
HTTP_RESEND_COUNT = "http.request.resend_count"

# The methods semconv knows, as wire bytes → attribute value (any other method is `_OTHER`).
HTTP_METHODS = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}

# --- meshwire's own attributes ---------------------------------------------------------------
RESPONSE_FLAGS_ATTR = "meshwire.response_flags"
REQUEST_ID = "meshwire.request_id"
UPSTREAM_CLUSTER = "meshwire.upstream.cluster"
LISTENER = "meshwire.listener"

# The instrumentation scope of everything meshwire records itself.
SCOPE = "meshwire"
