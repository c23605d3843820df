"""Rich error details: google.rpc.Status in `grpc-status-details-bin` (needs protobuf)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status

from proxy.grpc.metadata import b64decode_bin, b64encode_bin

__all__ = ["decode_details", "encode_details", "unpack_details"]


def encode_details(code: int, message: str, details: Sequence[Message]) -> bytes:
    """The `grpc-status-details-bin` value: a google.rpc.Status holding every detail as Any."""
    status = Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return b64encode_bin(status.SerializeToString())


def decode_details(value: bytes) -> tuple[Message, ...]:
    """The details a `grpc-status-details-bin` value carries; none when it is not a Status."""
    status = Status()
    try:
        status.ParseFromString(b64decode_bin(value))
    except (DecodeError, ValueError):
        return ()
    return unpack_details(status)


def unpack_details(status: Status) -> tuple[Message, ...]:
    """Each Any as its concrete message when the type is known to this process, else the Any."""
    unpacked: list[Message] = []
    pool = descriptor_pool.Default()
    for packed in status.details:
        try:
            descriptor = pool.FindMessageTypeByName(packed.TypeName())
        except KeyError:
            unpacked.append(packed)
            continue
        detail = message_factory.GetMessageClass(descriptor)()
        unpacked.append(detail if packed.Unpack(detail) else packed)
    return tuple(unpacked)
