"""Length-Prefixed-Message framing (sans-I/O): encode one message, decode a stream of chunks."""

from __future__ import annotations

import struct
import zlib

from proxy.grpc.status import GrpcError, StatusCode

# PROTOCOL-HTTP2: Length-Prefixed-Message → Compressed-Flag (1 byte) Message-Length (4 bytes,
# big-endian unsigned) Message.
PREFIX = struct.Struct(">BI")
PREFIX_SIZE = PREFIX.size
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # Dapr's --max-body-size default (4Mi)

IDENTITY = b"identity"
GZIP = b"gzip"
SUPPORTED_ENCODINGS = (IDENTITY, GZIP)
ACCEPT_ENCODING = b",".join(SUPPORTED_ENCODINGS)


class CompressionNotSupported(GrpcError):
    """A compressed message in an encoding this process cannot decode."""

    def __init__(self, encoding: bytes) -> None:
        name = encoding.decode("ascii", "replace") or "unnamed"
        super().__init__(StatusCode.UNIMPLEMENTED, f"compression not supported: {name}")


class MessageTooLarge(GrpcError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            StatusCode.RESOURCE_EXHAUSTED,
            f"message of {size} bytes exceeds the limit of {limit} bytes",
        )


class TruncatedMessage(GrpcError):
    def __init__(self, missing: int) -> None:
        super().__init__(
            StatusCode.INTERNAL, f"stream ended inside a message ({missing} bytes missing)"
        )


class CorruptMessage(GrpcError):
    def __init__(self, reason: str) -> None:
        super().__init__(StatusCode.INTERNAL, f"cannot decompress message: {reason}")


def encode_message(payload: bytes) -> bytes:
    """One uncompressed Length-Prefixed-Message."""
    return PREFIX.pack(0, len(payload)) + payload


class MessageDecoder:
    """Feed byte chunks as they arrive; get back each message once it is complete.

    `encoding` is the call's `grpc-encoding` (identity when absent): a message with the
    Compressed-Flag set is decompressed with it if it is gzip, refused otherwise. The size
    limit applies to the wire length as soon as a prefix is read (nothing is buffered past it)
    and again to the decompressed length.
    """

    __slots__ = ("_buffer", "_encoding", "_max_size")

    def __init__(
        self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, encoding: bytes | None = None
    ) -> None:
        self._buffer = bytearray()
        self._max_size = max_message_size
        self._encoding = (encoding or IDENTITY).strip().lower()

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the messages it completed, in order (often none or one)."""
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= PREFIX_SIZE:
            compressed, length = PREFIX.unpack_from(buffer, offset)
            if length > self._max_size:
                raise MessageTooLarge(length, self._max_size)
            end = offset + PREFIX_SIZE + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[offset + PREFIX_SIZE : end])
            messages.append(self._decompress(payload) if compressed else payload)
            offset = end
        if offset:
            del buffer[:offset]
        return messages

    def end(self) -> None:
        """The stream ended: TruncatedMessage if it stopped inside a message."""
        if not self._buffer:
            return
        if len(self._buffer) < PREFIX_SIZE:
            raise TruncatedMessage(PREFIX_SIZE - len(self._buffer))
        _, length = PREFIX.unpack_from(self._buffer, 0)
        raise TruncatedMessage(PREFIX_SIZE + length - len(self._buffer))

    def _decompress(self, payload: bytes) -> bytes:
        if self._encoding != GZIP:
            raise CompressionNotSupported(self._encoding)
        # wbits 16+MAX_WBITS: gzip container. max_length bounds the output, so a small
        # compressed message cannot inflate past the limit in memory.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(payload, self._max_size + 1)
        except zlib.error as exc:
            raise CorruptMessage(str(exc)) from exc
        if len(data) > self._max_size:
            raise MessageTooLarge(len(data), self._max_size)
        if not inflater.eof:
            raise CorruptMessage("truncated gzip stream")
        return data
