"""The HPACK our h2 connections write, checked byte by byte with an independent decoder."""

from __future__ import annotations

import hpack

from proxy.h2tuning import LeanEncoder

STABLE = [(b":method", b"GET"), (b":path", b"/orders"), (b"dapr-callee-app-id", b"billing")]


def request_fields(request_id: bytes) -> list[tuple[bytes, bytes]]:
    return [*STABLE, (b"x-request-id", request_id), (b"traceparent", b"00-" + request_id)]


def test_blocks_decode_to_the_same_fields_across_requests() -> None:
    encoder, decoder = LeanEncoder(), hpack.Decoder()
    for n in range(50):
        fields = request_fields(b"%032x" % n)
        assert decoder.decode(encoder.encode(fields), raw=True) == fields


def test_unique_values_never_enter_the_dynamic_table() -> None:
    encoder, decoder = LeanEncoder(), hpack.Decoder()
    for n in range(3):
        decoder.decode(encoder.encode(request_fields(b"%032x" % n)), raw=True)
    table = {name for name, _ in decoder.header_table.dynamic_entries}
    assert b"dapr-callee-app-id" in table
    assert b"x-request-id" not in table
    assert b"traceparent" not in table


def test_repeated_fields_shrink_to_index_bytes_and_literals_are_not_huffman_coded() -> None:
    encoder = LeanEncoder()
    encoder.encode(STABLE)
    assert encoder.encode(STABLE) == bytes([0x82, 0xBF, 0xBE])  # all three indexed
    block = encoder.encode([(b"x-new", b"plain")])
    # Literal with incremental indexing, new name: 0x40, then lengths without the H bit.
    assert block == b"\x40\x05x-new\x05plain"
