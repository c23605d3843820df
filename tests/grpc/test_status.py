"""Status trailers, grpc-message percent-encoding, rich details, timeouts and HTTP mappings."""

from __future__ import annotations

import base64

import pytest
from google.protobuf import any_pb2
from google.rpc.error_details_pb2 import ErrorInfo, ResourceInfo
from google.rpc.status_pb2 import Status

from proxy.grpc.metadata import (
    b64decode_bin,
    b64encode_bin,
    incoming_metadata,
    is_grpc_content_type,
    outgoing_metadata,
)
from proxy.grpc.status import (
    GrpcError,
    StatusCode,
    code_for_http_status,
    code_for_transport_status,
    decode_grpc_message,
    encode_grpc_message,
    error_from_headers,
    format_timeout,
    http_status_for,
    parse_timeout,
    trailers_for,
)


def test_there_are_seventeen_codes() -> None:
    assert len(StatusCode) == 17
    assert StatusCode.UNAUTHENTICATED == 16
    assert StatusCode.DEADLINE_EXCEEDED == 4


def test_ok_trailers_are_just_the_status() -> None:
    assert trailers_for(StatusCode.OK) == [(b"grpc-status", b"0")]


def test_grpc_message_is_percent_encoded_per_the_spec() -> None:
    assert encode_grpc_message("plain text ~ ok") == b"plain text ~ ok"
    assert encode_grpc_message("100%") == b"100%25"
    assert encode_grpc_message("a\nb\tc") == b"a%0Ab%09c"
    assert encode_grpc_message("caf\u00e9 \u2713") == b"caf%C3%A9 %E2%9C%93"
    headers = trailers_for(StatusCode.NOT_FOUND, "key \u00absk\u00bb not found: 50%")
    assert headers[:2] == [
        (b"grpc-status", b"5"),
        (b"grpc-message", b"key %C2%ABsk%C2%BB not found: 50%25"),
    ]


@pytest.mark.parametrize(
    "text", ["", "ascii", "100% sure", "caf\u00e9", "line\r\nbreak", "\u2603 snow", "%%%"]
)
def test_grpc_message_round_trips(text: str) -> None:
    assert decode_grpc_message(encode_grpc_message(text)) == text


def test_grpc_message_decoding_is_lenient() -> None:
    assert decode_grpc_message(b"50% off %zz %4") == "50% off %zz %4"
    assert decode_grpc_message(b"%C3%A9%e2%9c%93") == "\u00e9\u2713"
    assert decode_grpc_message(b"%FF") == "\ufffd"


def test_details_travel_as_unpadded_base64_google_rpc_status() -> None:
    info = ErrorInfo(reason="DAPR_STATE_NOT_FOUND", domain="dapr.io", metadata={"key": "k1"})
    resource = ResourceInfo(resource_type="state", resource_name="store")
    headers = trailers_for(StatusCode.NOT_FOUND, "not found", [info, resource])
    raw = dict(headers)[b"grpc-status-details-bin"]
    assert not raw.endswith(b"=")
    status = Status.FromString(base64.b64decode(raw + b"=" * (-len(raw) % 4)))
    assert status.code == 5
    assert status.message == "not found"
    unpacked = ErrorInfo()
    assert status.details[0].Unpack(unpacked)
    assert unpacked == info
    assert status.details[1].TypeName() == "google.rpc.ResourceInfo"


def test_status_round_trips_with_typed_details_and_metadata() -> None:
    info = ErrorInfo(reason="R", domain="dapr.io")
    headers = [
        *trailers_for(StatusCode.PERMISSION_DENIED, "no \u2014 way", [info]),
        (b"x-extra", b"1"),
        (b"x-blob-bin", b64encode_bin(b"\x00\x01")),
    ]
    err = error_from_headers(headers)
    assert err is not None
    assert err.code is StatusCode.PERMISSION_DENIED
    assert err.message == "no \u2014 way"
    assert err.details == (info,)
    assert isinstance(err.details[0], ErrorInfo)
    assert err.metadata == [(b"x-extra", b"1"), (b"x-blob-bin", b"\x00\x01")]


def test_unknown_detail_types_stay_packed() -> None:
    packed = any_pb2.Any(type_url="type.googleapis.com/example.Unknown", value=b"\x08\x01")
    status = Status(code=2, message="m", details=[packed])
    details = b64encode_bin(status.SerializeToString())
    headers = [(b"grpc-status", b"2"), (b"grpc-status-details-bin", details)]
    err = error_from_headers(headers)
    assert err is not None
    assert err.details == (packed,)


def test_headers_without_status_and_odd_status_values() -> None:
    assert error_from_headers([(b"content-type", b"application/grpc")]) is None
    weird = error_from_headers([(b"grpc-status", b"99")])
    assert weird is not None
    assert weird.code is StatusCode.UNKNOWN
    garbage = error_from_headers([(b"grpc-status", b"3"), (b"grpc-status-details-bin", b"!!")])
    assert garbage is not None
    assert garbage.code is StatusCode.INVALID_ARGUMENT
    assert garbage.details == ()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("100m", 0.1),
        (b"1S", 1.0),
        ("2M", 120.0),
        ("1H", 3600.0),
        ("250u", 0.00025),
        ("99999999n", 0.099999999),
    ],
)
def test_parse_timeout(value: str | bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "10", "1.5S", "-1S", "123456789S", "10s", "5 S"])
def test_malformed_timeout_is_internal(value: str) -> None:
    with pytest.raises(GrpcError) as caught:
        parse_timeout(value)
    assert caught.value.code is StatusCode.INTERNAL


@pytest.mark.parametrize(
    ("value", "shown"), [(b"1x", "1x"), (b"1\xffS", "1\\xffS"), ("5 S", "5 S")]
)
def test_a_malformed_timeout_is_shown_as_text_not_a_bytes_repr(
    value: bytes | str, shown: str
) -> None:
    with pytest.raises(GrpcError) as caught:
        parse_timeout(value)
    assert caught.value.message == f"malformed grpc-timeout {shown}"


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 0.0123, 0.5, 1.0, 30.0, 86400.0, 1e9])
def test_format_timeout_fits_eight_digits_and_never_shortens(seconds: float) -> None:
    value = format_timeout(seconds)
    assert len(value) <= 9
    assert parse_timeout(value) >= seconds * (1 - 1e-12)


def test_grpc_to_http_is_grpc_gateways_table() -> None:
    assert http_status_for(StatusCode.OK) == 200
    assert http_status_for(StatusCode.NOT_FOUND) == 404
    assert http_status_for(StatusCode.INVALID_ARGUMENT) == 400
    assert http_status_for(StatusCode.UNAVAILABLE) == 503
    assert http_status_for(StatusCode.DEADLINE_EXCEEDED) == 504
    assert http_status_for(StatusCode.PERMISSION_DENIED) == 403
    assert http_status_for(StatusCode.UNAUTHENTICATED) == 401
    assert http_status_for(StatusCode.UNIMPLEMENTED) == 501
    assert http_status_for(StatusCode.RESOURCE_EXHAUSTED) == 429
    assert http_status_for(StatusCode.ALREADY_EXISTS) == 409
    assert http_status_for(StatusCode.CANCELLED) == 499
    assert http_status_for(StatusCode.INTERNAL) == 500


@pytest.mark.parametrize(
    "code",
    [
        StatusCode.NOT_FOUND,
        StatusCode.INVALID_ARGUMENT,
        StatusCode.UNAVAILABLE,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.PERMISSION_DENIED,
        StatusCode.UNAUTHENTICATED,
        StatusCode.UNIMPLEMENTED,
        StatusCode.RESOURCE_EXHAUSTED,
        StatusCode.ALREADY_EXISTS,
        StatusCode.CANCELLED,
    ],
)
def test_http_to_grpc_inverts_the_distinct_entries(code: StatusCode) -> None:
    assert code_for_http_status(http_status_for(code)) is code


def test_http_to_grpc_edges() -> None:
    assert code_for_http_status(204) is StatusCode.OK
    assert code_for_http_status(500) is StatusCode.UNKNOWN
    assert code_for_http_status(418) is StatusCode.UNKNOWN


def test_transport_status_follows_the_spec_table() -> None:
    assert code_for_transport_status(400) is StatusCode.INTERNAL
    assert code_for_transport_status(401) is StatusCode.UNAUTHENTICATED
    assert code_for_transport_status(403) is StatusCode.PERMISSION_DENIED
    assert code_for_transport_status(404) is StatusCode.UNIMPLEMENTED
    for status in (429, 502, 503, 504):
        assert code_for_transport_status(status) is StatusCode.UNAVAILABLE
    assert code_for_transport_status(500) is StatusCode.UNKNOWN


def test_binary_metadata_base64_accepts_padding_or_not() -> None:
    assert b64encode_bin(b"\x00\x01") == b"AAE"
    assert b64decode_bin(b"AAE") == b64decode_bin(b"AAE=") == b"\x00\x01"
    with pytest.raises(ValueError, match="base64"):
        b64decode_bin(b"A*E")


def test_metadata_in_and_out() -> None:
    received = incoming_metadata(
        [
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"grpc-timeout", b"1S"),
            (b"dapr-api-token", b"secret"),
            (b"x-id-bin", b"AAE"),
            (b"x-bad-bin", b"***"),
        ]
    )
    assert received == [(b"dapr-api-token", b"secret"), (b"x-id-bin", b"\x00\x01")]
    assert outgoing_metadata([(b"X-Id-Bin", b"\x00\x01"), (b"a", b"b")]) == [
        (b"x-id-bin", b"AAE"),
        (b"a", b"b"),
    ]
    with pytest.raises(ValueError, match="reserved"):
        outgoing_metadata([(b"grpc-status", b"0")])


def test_content_type_check() -> None:
    assert is_grpc_content_type(b"application/grpc")
    assert is_grpc_content_type(b"application/grpc+proto")
    assert is_grpc_content_type(b"Application/GRPC; charset=x")
    assert not is_grpc_content_type(b"application/grpc+json")
    assert not is_grpc_content_type(b"application/json")
    assert not is_grpc_content_type(None)
