"""MessageStream: a server-streaming handler's messages as a pulled response Body with status."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import trio
from google.protobuf.message import Message

from proxy.grpc.context import RequestContext
from proxy.grpc.framing import MessageTooLarge, encode_message
from proxy.grpc.metadata import sendable_metadata
from proxy.grpc.status import GrpcError, StatusCode, error_trailers, trailers_for
from proxy.http.model import Headers, StreamInfo

log = logging.getLogger("meshwire.grpc")

ToGrpcError = Callable[[Exception, StreamInfo | None], GrpcError]


class MessageStream:
    """Each `read()` pulls the handler's next message, under the call's deadline.

    The downstream writer drives the iterator from its own task, one step per read, so no cancel
    scope is ever held across a yield. When the iterator ends or fails, `trailers` carry the
    status and the trailing metadata, and `read()` returns b"".
    """

    __slots__ = ("_ctx", "_first", "_max_size", "_messages", "_to_error", "failed", "trailers")

    length: int | None = None

    def __init__(
        self,
        messages: AsyncIterator[Message],
        ctx: RequestContext,
        max_message_size: int,
        to_error: ToGrpcError,
    ) -> None:
        self._messages = messages
        self._ctx = ctx
        self._max_size = max_message_size
        self._to_error = to_error
        self._first: bytes | None = None
        self.failed: GrpcError | None = None
        self.trailers: Headers | None = None

    async def prime(self) -> None:
        """Pull the first message ahead, so a failure before it can still be Trailers-Only."""
        self._first = await self._next()

    async def read(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self.trailers is not None:
            return b""
        return await self._next()

    async def _next(self) -> bytes:
        ctx = self._ctx
        try:
            with trio.move_on_at(ctx.deadline) as deadline:
                message = await anext(self._messages)
            if deadline.cancelled_caught:
                raise GrpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            data = message.SerializeToString()
            if len(data) > self._max_size:
                raise MessageTooLarge(len(data), self._max_size)
            return encode_message(data)
        except StopAsyncIteration:
            self.trailers = [*trailers_for(StatusCode.OK), *ctx.response_trailers]
        except Exception as exc:
            self.failed = err = self._to_error(exc, ctx.info)
            self.trailers = [
                *error_trailers(err),
                *sendable_metadata(err.metadata),
                *ctx.response_trailers,
            ]
            await self._close_iterator()
        return b""

    async def _close_iterator(self) -> None:
        aclose = getattr(self._messages, "aclose", None)
        if aclose is not None:
            # Body.aclose never raises: a generator that fails while closing is only logged.
            with trio.CancelScope(shield=True):
                try:
                    await aclose()
                except Exception:
                    log.exception("a server-streaming handler failed while closing")

    async def aclose(self) -> None:
        self._first = None
        if self.trailers is None:
            self.trailers = []
        await self._close_iterator()
