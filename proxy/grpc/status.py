"""gRPC status: the codes, GrpcError, status trailers, timeouts, HTTP mappings (no protobuf)."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.grpc.metadata import incoming_metadata
from proxy.http.model import Headers, header_get

if TYPE_CHECKING:
    from google.protobuf.message import Message

STATUS = b"grpc-status"
MESSAGE = b"grpc-message"
DETAILS = b"grpc-status-details-bin"
STATUS_HEADERS = frozenset({STATUS, MESSAGE, DETAILS})


class StatusCode(enum.IntEnum):
    """The 17 gRPC status codes (google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GrpcError(Exception):
    """A call that ends with a non-OK status.

    `details` are protobuf messages (google.rpc.ErrorInfo, ResourceInfo, …) carried packed in
    `grpc-status-details-bin`. `metadata` is the trailing metadata received with the error (on the
    client side) or to send with it (on the server side).
    """

    def __init__(
        self,
        code: StatusCode,
        message: str = "",
        details: Sequence[Message] = (),
        *,
        metadata: Headers | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)
        self.metadata: Headers = metadata if metadata is not None else []


# --- grpc-message ------------------------------------------------------------------------------

# PROTOCOL-HTTP2: Status-Message is percent-encoded UTF-8; bytes outside %x20-%x7E, and '%'
# itself, become %XX. Decoding must be lenient: an invalid escape is kept as it is.


def encode_grpc_message(text: str) -> bytes:
    out = bytearray()
    for byte in text.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def decode_grpc_message(value: bytes) -> str:
    out = bytearray()
    i, n = 0, len(value)
    while i < n:
        byte = value[i]
        if byte == 0x25 and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(byte)
        i += 1
    return out.decode("utf-8", errors="replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


# --- status trailers ---------------------------------------------------------------------------


def trailers_for(code: StatusCode, message: str = "", details: Sequence[Message] = ()) -> Headers:
    """`grpc-status`, `grpc-message` when there is one, and `grpc-status-details-bin` (a
    google.rpc.Status holding every detail as Any) when details are given."""
    headers: Headers = [(STATUS, str(int(code)).encode())]
    if message:
        headers.append((MESSAGE, encode_grpc_message(message)))
    if details:  # protobuf messages: protobuf is loaded already
        from proxy.grpc.details import encode_details

        headers.append((DETAILS, encode_details(int(code), message, details)))
    return headers


def error_trailers(err: GrpcError) -> Headers:
    return trailers_for(err.code, err.message, err.details)


def error_from_headers(headers: Headers) -> GrpcError | None:
    """The status a header block carries (trailers, or Trailers-Only headers): None when it has
    no `grpc-status`, a GrpcError (code OK included) otherwise; its custom fields become the
    error's metadata (`-bin` values decoded)."""
    raw = header_get(headers, STATUS)
    if raw is None:
        return None
    try:
        code = StatusCode(int(raw))
    except ValueError:
        code = StatusCode.UNKNOWN
    message_raw = header_get(headers, MESSAGE)
    message = decode_grpc_message(message_raw) if message_raw is not None else ""
    details: tuple[Message, ...] = ()
    details_raw = header_get(headers, DETAILS)
    if details_raw is not None:  # protobuf is imported with the first status that has details
        from proxy.grpc.details import decode_details

        details = decode_details(details_raw)
    return GrpcError(code, message, details, metadata=incoming_metadata(headers))


# --- grpc-timeout ------------------------------------------------------------------------------

_UNITS: dict[bytes, float] = {
    b"H": 3600.0,
    b"M": 60.0,
    b"S": 1.0,
    b"m": 1e-3,
    b"u": 1e-6,
    b"n": 1e-9,
}
_MAX_DIGITS = 8  # PROTOCOL-HTTP2: TimeoutValue is a positive integer of at most 8 ASCII digits


def parse_timeout(value: bytes | str) -> float:
    """`grpc-timeout` → seconds; GrpcError(INTERNAL) for a malformed value (as grpc-go does)."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    digits, unit = raw[:-1], raw[-1:]
    if not digits.isdigit() or len(digits) > _MAX_DIGITS or unit not in _UNITS:
        raise GrpcError(
            StatusCode.INTERNAL, f"malformed grpc-timeout {raw.decode('ascii', 'backslashreplace')}"
        )
    return int(digits) * _UNITS[unit]


def format_timeout(seconds: float) -> bytes:
    """Seconds → `grpc-timeout`, in the finest unit that fits 8 digits, rounded up."""
    for unit, scale in (
        (b"n", 1e-9),
        (b"u", 1e-6),
        (b"m", 1e-3),
        (b"S", 1.0),
        (b"M", 60.0),
        (b"H", 3600.0),
    ):
        count = max(1, math.ceil(seconds / scale))
        if count < 10**_MAX_DIGITS:
            return str(count).encode() + unit
    return b"99999999H"


# --- HTTP status mappings ----------------------------------------------------------------------

# grpc-gateway's HTTPStatusFromCode, which Dapr uses to answer HTTP callers for gRPC outcomes.
_HTTP_FOR_CODE: dict[StatusCode, int] = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 499,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
    StatusCode.UNAUTHENTICATED: 401,
}

# The inverse, as Dapr's CodeFromHTTPStatus gives it: an app's HTTP answer → a gRPC status.
_CODE_FOR_HTTP: dict[int, StatusCode] = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    408: StatusCode.CANCELLED,
    409: StatusCode.ALREADY_EXISTS,
    412: StatusCode.FAILED_PRECONDITION,
    429: StatusCode.RESOURCE_EXHAUSTED,
    499: StatusCode.CANCELLED,
    500: StatusCode.UNKNOWN,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}

# PROTOCOL-HTTP2 / http-grpc-status-mapping.md: what a gRPC client reports when the response is
# not a gRPC response at all (HTTP status other than 200, e.g. from a proxy on the way).
_CODE_FOR_TRANSPORT: dict[int, StatusCode] = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}


def http_status_for(code: StatusCode) -> int:
    """gRPC status → HTTP status (grpc-gateway's table)."""
    return _HTTP_FOR_CODE.get(code, 500)


def code_for_http_status(status: int) -> StatusCode:
    """An application's HTTP status → gRPC status (grpc-gateway's inverse; 2xx is OK)."""
    if 200 <= status < 300:
        return StatusCode.OK
    return _CODE_FOR_HTTP.get(status, StatusCode.UNKNOWN)


def code_for_transport_status(status: int) -> StatusCode:
    """A non-200 HTTP status on a gRPC call → the code a gRPC client reports (the spec's table)."""
    return _CODE_FOR_TRANSPORT.get(status, StatusCode.UNKNOWN)
