"""A whole body read under a size limit: what one JSON value or protobuf message must hold."""

from __future__ import annotations

from proxy.grpc.framing import DEFAULT_MAX_MESSAGE_SIZE
from proxy.http.errors import DaprApiError
from proxy.http.model import Body

__all__ = ["BodyTooLarge", "read_body"]


class BodyTooLarge(DaprApiError):
    def __init__(self, limit: int) -> None:
        super().__init__("ERR_BODY_READ", f"body larger than {limit} bytes", status=413)


async def read_body(body: Body, limit: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """The whole body (a message field must hold it), closed afterwards; BodyTooLarge past
    `limit`."""
    data = bytearray()
    try:
        while chunk := await body.read():
            data += chunk
            if len(data) > limit:
                raise BodyTooLarge(limit)
    finally:
        await body.aclose()
    return bytes(data)
