"""Cheaper HTTP/2 headers on our own connections: plain HPACK literals, unique values unindexed.

Profiled on the sidecar hop, h2's send_headers cost ~0.2 ms per request, most of it Huffman
coding in Python, dynamic-table searches and evictions caused by values that never repeat, and
a second validation pass over headers the codecs have already cleaned (pseudo-headers first,
no connection-specific fields: proxy/upstream/h2stream.py and proxy/downstream/h2_stream.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import h2.config
import hpack

_Fields = (
    Iterable[
        hpack.HeaderTuple
        | tuple[bytes | str, bytes | str]
        | tuple[bytes | str, bytes | str, bool | None]
    ]
    | dict[bytes | str, bytes | str]
)

# Values that differ on every request: indexing them only evicts the fields that do repeat.
UNIQUE_VALUES = frozenset(
    (
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"grpc-trace-bin",
    )
)


class LeanEncoder(hpack.Encoder):
    """Huffman coding saves a few bytes per field at a Python loop per byte: literals go plain
    (RFC 7541 §5.2 lets the encoder choose), and unique values are literals without indexing."""

    def encode(self, headers: _Fields, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        return super().add(to_add, sensitive or to_add[0] in UNIQUE_VALUES, huffman)


def lean_config(*, client_side: bool) -> h2.config.H2Configuration:
    """Bytes in and out; outbound headers are checked once, by our own cleaning pass."""
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
