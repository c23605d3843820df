"""Dapr's publish gRPC API: PublishEvent, BulkPublishEventAlpha1 and BulkPublishEvent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import empty_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc.error_details_pb2 import ErrorInfo

from filters.dapr.app_callback import api_error
from filters.pubsub.http_api import span_context
from filters.pubsub.publisher import BulkEntry, Publisher
from proxy.grpc.context import RequestContext
from proxy.grpc.service import UnaryHandler
from proxy.grpc.status import GrpcError, StatusCode
from proxy.http.errors import DaprApiError

if TYPE_CHECKING:
    from dapr.proto.runtime.v1.pubsub_pb2 import (
        BulkPublishRequest,
        BulkPublishResponse,
        PublishEventRequest,
    )

__all__ = ["PubSubGrpcApi", "grpc_error"]

Handler = Callable[[Any, RequestContext], Awaitable[Message]]
BULK_METHODS = ("BulkPublishEventAlpha1", "BulkPublishEvent")
_DOMAIN = "dapr.io"
_REASON_PREFIX = "DAPR_PUBSUB_"

# daprd's pkg/api/errors/pubsub.go: the gRPC code and ErrorInfo reason of each error code.
_GRPC_ERRORS = {
    "ERR_PUBSUB_NOT_CONFIGURED": (StatusCode.FAILED_PRECONDITION, "NOT_CONFIGURED"),
    "ERR_PUBSUB_EMPTY": (StatusCode.INVALID_ARGUMENT, "NAME_EMPTY"),
    "ERR_PUBSUB_NOT_FOUND": (StatusCode.INVALID_ARGUMENT, "NOT_FOUND"),
    "ERR_TOPIC_NAME_EMPTY": (StatusCode.INVALID_ARGUMENT, "TOPIC_NAME_EMPTY"),
    "ERR_PUBSUB_REQUEST_METADATA": (StatusCode.INVALID_ARGUMENT, "METADATA_DESERIALIZATION"),
    "ERR_PUBSUB_FORBIDDEN": (StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
    "ERR_PUBSUB_CLOUD_EVENTS_SER": (StatusCode.INVALID_ARGUMENT, "CLOUD_EVENT_CREATION"),
    "ERR_PUBSUB_EVENTS_SER": (StatusCode.INVALID_ARGUMENT, "MARSHAL_EVENTS"),
    "ERR_PUBSUB_PUBLISH_MESSAGE": (StatusCode.INTERNAL, "PUBLISH_MESSAGE"),
}


def grpc_error(exc: DaprApiError) -> GrpcError:
    """A pub/sub API error as daprd's rich gRPC status: its code, and an ErrorInfo whose
    reason the SDKs report as the error code."""
    known = _GRPC_ERRORS.get(exc.error_code)
    if known is None:
        return api_error(exc)
    code, reason = known
    info = ErrorInfo(reason=_REASON_PREFIX + reason, domain=_DOMAIN)
    return GrpcError(code, exc.message, [info])


def _guarded(handler: Handler) -> Handler:
    async def call(request: Any, ctx: RequestContext) -> Message:
        try:
            return await handler(request, ctx)
        except DaprApiError as exc:
            raise grpc_error(exc) from exc

    return call


def _duplicate_entries(name: str, topic: str) -> DaprApiError:
    return DaprApiError(
        "ERR_PUBSUB_EVENTS_SER",
        f"error marshaling events to bytes for topic {topic} pubsub {name}. "
        "error: entryId is duplicated or not present for entry",
        status=400,
    )


class PubSubGrpcApi:
    """The publish methods, for registration on the Dapr service (the response class comes
    from the service descriptor, whichever module the installed SDK generated it in)."""

    def __init__(self, service: ServiceDescriptor, publisher: Publisher) -> None:
        self.publisher = publisher
        self._bulk_methods = [m for m in BULK_METHODS if m in service.methods_by_name]
        output = service.methods_by_name[self._bulk_methods[0]].output_type
        self._bulk_response = cast(
            "type[BulkPublishResponse]", message_factory.GetMessageClass(output)
        )

    def methods(self) -> dict[str, UnaryHandler[Any]]:
        handlers: dict[str, Handler] = {"PublishEvent": self._publish}
        handlers.update(dict.fromkeys(self._bulk_methods, self._bulk_publish))
        return {name: _guarded(handler) for name, handler in handlers.items()}

    async def _publish(self, call: PublishEventRequest, ctx: RequestContext) -> Message:
        await self.publisher.publish(
            self.publisher.lookup(call.pubsub_name, call.topic),
            call.topic,
            call.data,
            call.data_content_type or None,
            dict(call.metadata),
            span_context(ctx.request),
        )
        return empty_pb2.Empty()

    async def _bulk_publish(self, call: BulkPublishRequest, ctx: RequestContext) -> Message:
        """All entries published, or the first failure as daprd's ERR_PUBSUB_PUBLISH_MESSAGE
        status: grpc-go drops the response of a call that fails, so failedEntries only ever
        reach a client empty."""
        named = self.publisher.lookup(call.pubsub_name, call.topic)
        entries = self._entries(call)
        failed = await self.publisher.bulk_publish(
            named, call.topic, entries, dict(call.metadata), span_context(ctx.request)
        )
        if failed:
            raise DaprApiError("ERR_PUBSUB_PUBLISH_MESSAGE", failed[0][1], status=500)
        return self._bulk_response()

    @staticmethod
    def _entries(call: BulkPublishRequest) -> list[BulkEntry]:
        """The entries, whose event bytes are published as a single publish's data would be;
        an empty or repeated entryId fails the whole request."""
        seen: set[str] = set()
        entries: list[BulkEntry] = []
        for entry in call.entries:
            if not entry.entry_id or entry.entry_id in seen:
                raise _duplicate_entries(call.pubsub_name, call.topic)
            seen.add(entry.entry_id)
            metadata = dict(entry.metadata)
            entries.append(BulkEntry(entry.entry_id, entry.event, entry.content_type, metadata))
        return entries
