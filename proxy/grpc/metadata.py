"""gRPC metadata: which headers are the protocol's own, and `-bin` values in base64."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from proxy.http.model import CONNECTION_SPECIFIC, Header, Headers

CONTENT_TYPE = b"application/grpc"

# Call-definition fields the transport owns: never handed to handlers as metadata, never taken
# from callers' metadata (they would contradict what the codec sends).
RESERVED = frozenset(
    {
        b"content-type",
        b"content-length",
        b"te",
        b"host",
        b"grpc-timeout",
        b"grpc-encoding",
        b"grpc-accept-encoding",
        b"grpc-message-type",
        b"grpc-status",
        b"grpc-message",
        b"grpc-status-details-bin",
    }
    | CONNECTION_SPECIFIC
)


def b64encode_bin(value: bytes) -> bytes:
    """PROTOCOL-HTTP2: binary values are base64 and should be sent without padding."""
    return base64.b64encode(value).rstrip(b"=")


def b64decode_bin(value: bytes) -> bytes:
    """Accepts padded and unpadded base64 (the spec requires both); ValueError if malformed."""
    try:
        return base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"malformed base64 in binary metadata: {exc}") from exc


def is_grpc_content_type(value: bytes | None) -> bool:
    """`application/grpc` or `application/grpc+proto` (with optional parameters)."""
    if value is None:
        return False
    media = value.split(b";", 1)[0].strip().lower()
    return media in (CONTENT_TYPE, CONTENT_TYPE + b"+proto")


def incoming_metadata(headers: Iterable[Header]) -> Headers:
    """Custom metadata of a request: reserved fields dropped, `-bin` values decoded.

    A `-bin` value that is not valid base64 is dropped, as grpc-go does.
    """
    metadata: Headers = []
    for name, value in headers:
        if name in RESERVED or name[:1] == b":":
            continue
        if name.endswith(b"-bin"):
            try:
                value = b64decode_bin(value)
            except ValueError:
                continue
        metadata.append((name, value))
    return metadata


def outgoing_metadata(metadata: Iterable[Header]) -> Headers:
    """Metadata ready for the wire: names lower-cased, reserved fields refused, `-bin` encoded."""
    headers: Headers = []
    for name, value in metadata:
        key = name.lower()
        if key in RESERVED or key[:1] == b":":
            raise ValueError(f"{key.decode(errors='replace')} is reserved and cannot be metadata")
        headers.append((key, b64encode_bin(value) if key.endswith(b"-bin") else value))
    return headers


def sendable_metadata(metadata: Iterable[Header]) -> Headers:
    """Like outgoing_metadata, but reserved fields are skipped instead of refused (for metadata
    relayed from another call, e.g. an upstream error's trailers)."""
    return outgoing_metadata(
        item for item in metadata if item[0].lower() not in RESERVED and item[0][:1] != b":"
    )
