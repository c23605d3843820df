"""Length-Prefixed-Message framing, with bytes only: whole, byte by byte, limits, gzip."""

from __future__ import annotations

import gzip
import struct

import pytest

from proxy.grpc.framing import (
    CompressionNotSupported,
    CorruptMessage,
    MessageDecoder,
    MessageTooLarge,
    TruncatedMessage,
    encode_message,
)
from proxy.grpc.status import StatusCode


def compressed_frame(payload: bytes) -> bytes:
    data = gzip.compress(payload)
    return struct.pack(">BI", 1, len(data)) + data


def test_encode_prefixes_flag_and_big_endian_length() -> None:
    assert encode_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"


def test_decode_several_messages_in_one_chunk() -> None:
    wire = encode_message(b"first") + encode_message(b"") + encode_message(b"third")
    decoder = MessageDecoder()
    assert decoder.feed(wire) == [b"first", b"", b"third"]
    decoder.end()


def test_decode_byte_by_byte_yields_each_message_on_its_last_byte() -> None:
    wire = encode_message(b"hello") + encode_message(b"world!")
    decoder = MessageDecoder()
    seen: list[tuple[int, bytes]] = []
    for index in range(len(wire)):
        for message in decoder.feed(wire[index : index + 1]):
            seen.append((index, message))
    assert seen == [(9, b"hello"), (len(wire) - 1, b"world!")]
    decoder.end()


def test_message_split_across_chunks_at_every_offset() -> None:
    wire = encode_message(b"x" * 300)
    for cut in range(len(wire) + 1):
        decoder = MessageDecoder()
        assert decoder.feed(wire[:cut]) + decoder.feed(wire[cut:]) == [b"x" * 300]


def test_size_limit_is_enforced_from_the_prefix_alone() -> None:
    decoder = MessageDecoder(max_message_size=10)
    assert decoder.feed(encode_message(b"0123456789")) == [b"0123456789"]
    with pytest.raises(MessageTooLarge) as caught:
        decoder.feed(struct.pack(">BI", 0, 11))  # no payload needed to refuse it
    assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED


def test_default_limit_is_four_mebibytes() -> None:
    decoder = MessageDecoder()
    assert decoder.feed(struct.pack(">BI", 0, 4 * 1024 * 1024)) == []
    with pytest.raises(MessageTooLarge):
        MessageDecoder().feed(struct.pack(">BI", 0, 4 * 1024 * 1024 + 1))


def test_end_inside_a_message_is_truncation() -> None:
    decoder = MessageDecoder()
    decoder.feed(encode_message(b"abcdef")[:-2])
    with pytest.raises(TruncatedMessage) as caught:
        decoder.end()
    assert caught.value.code is StatusCode.INTERNAL
    partial_prefix = MessageDecoder()
    partial_prefix.feed(b"\x00\x00")
    with pytest.raises(TruncatedMessage):
        partial_prefix.end()


def test_compressed_flag_without_a_known_encoding_is_unimplemented() -> None:
    with pytest.raises(CompressionNotSupported) as caught:
        MessageDecoder().feed(compressed_frame(b"payload"))
    assert caught.value.code is StatusCode.UNIMPLEMENTED
    assert "compression not supported" in caught.value.message
    with pytest.raises(CompressionNotSupported):
        MessageDecoder(encoding=b"snappy").feed(compressed_frame(b"payload"))


def test_gzip_messages_are_decompressed_and_mixed_with_plain_ones() -> None:
    decoder = MessageDecoder(encoding=b"gzip")
    wire = compressed_frame(b"squeezed" * 50) + encode_message(b"plain")
    assert [m for i in range(len(wire)) for m in decoder.feed(wire[i : i + 1])] == [
        b"squeezed" * 50,
        b"plain",
    ]


def test_gzip_bomb_is_stopped_at_the_limit() -> None:
    frame = compressed_frame(b"\x00" * 100_000)
    assert len(frame) < 1000
    with pytest.raises(MessageTooLarge):
        MessageDecoder(max_message_size=1000, encoding=b"gzip").feed(frame)


def test_corrupt_gzip_is_internal() -> None:
    frame = struct.pack(">BI", 1, 4) + b"nope"
    with pytest.raises(CorruptMessage) as caught:
        MessageDecoder(encoding=b"gzip").feed(frame)
    assert caught.value.code is StatusCode.INTERNAL
