"""Dapr's state gRPC API: SaveState, GetState, GetBulkState, DeleteState, DeleteBulkState,
ExecuteStateTransaction and QueryStateAlpha1 of `dapr.proto.runtime.v1.Dapr`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import empty_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from filters.state import api_errors as errors
from filters.state.api_errors import StateApiError
from filters.state.observe import Observer
from filters.state.query import QueryError, parse_query
from filters.state.registry import StateStores
from filters.state.service import TTL_EXPIRE_TIME, StateService, expire_time, set_request
from filters.state.store import Concurrency, DeleteRequest, SetRequest
from proxy.grpc.context import RequestContext
from proxy.grpc.service import UnaryHandler

if TYPE_CHECKING:
    from dapr.proto.common.v1.common_pb2 import StateItem as StateItemMessage
    from dapr.proto.runtime.v1.state_pb2 import (
        DeleteBulkStateRequest,
        DeleteStateRequest,
        ExecuteStateTransactionRequest,
        GetBulkStateRequest,
        GetBulkStateResponse,
        GetStateRequest,
        GetStateResponse,
        QueryStateRequest,
        QueryStateResponse,
        SaveStateRequest,
    )

_FIRST_WRITE = 1  # common.v1.StateOptions.CONCURRENCY_FIRST_WRITE
Handler = Callable[[Any, RequestContext], Awaitable[Message]]


def _concurrency(item: StateItemMessage | DeleteStateRequest) -> Concurrency:
    has_options = item.HasField("options")
    return (
        "first-write" if has_options and item.options.concurrency == _FIRST_WRITE else "last-write"
    )


def _etag(item: StateItemMessage | DeleteStateRequest) -> str | None:
    """A set `etag` field makes the write conditional, even with an empty value."""
    return item.etag.value if item.HasField("etag") else None


def _guarded(handler: Handler) -> Handler:
    """The state API's errors as the gRPC status daprd answers with."""

    async def call(request: Any, ctx: RequestContext) -> Message:
        try:
            return await handler(request, ctx)
        except StateApiError as exc:
            raise exc.as_grpc() from exc

    return call


class StateGrpcApi:
    """The state methods, for registration on the Dapr service (response classes come from the
    service descriptor, whichever module the installed SDK generated them in)."""

    def __init__(self, service: ServiceDescriptor, stores: StateStores, observer: Observer):
        self.service = StateService(stores, observer)
        methods = service.methods_by_name

        def output(name: str) -> type[Message]:
            return message_factory.GetMessageClass(methods[name].output_type)

        self._get_response = cast("type[GetStateResponse]", output("GetState"))
        self._bulk_response = cast("type[GetBulkStateResponse]", output("GetBulkState"))
        self._query_response = cast("type[QueryStateResponse]", output("QueryStateAlpha1"))

    def methods(self) -> dict[str, UnaryHandler[Any]]:
        handlers: dict[str, Handler] = {
            "SaveState": self._save,
            "GetState": self._get,
            "GetBulkState": self._bulk_get,
            "DeleteState": self._delete,
            "DeleteBulkState": self._delete_bulk,
            "ExecuteStateTransaction": self._transaction,
            "QueryStateAlpha1": self._query,
        }
        return {name: _guarded(handler) for name, handler in handlers.items()}

    async def _save(self, call: SaveStateRequest, ctx: RequestContext) -> Message:
        named = self.service.store(call.store_name)
        items = [_set_request(item) for item in call.states]
        await self.service.save(named, items, ctx.info.trace)
        return empty_pb2.Empty()

    async def _get(self, call: GetStateRequest, ctx: RequestContext) -> Message:
        named = self.service.store(call.store_name)
        item = await self.service.get(named, call.key, ctx.info.trace)
        reply = self._get_response()
        if item is not None:
            reply.data = item.value
            reply.etag = item.etag
            expires = expire_time(item)
            if expires is not None:
                reply.metadata[TTL_EXPIRE_TIME] = expires
        return reply

    async def _bulk_get(self, call: GetBulkStateRequest, ctx: RequestContext) -> Message:
        named = self.service.store(call.store_name)
        keys = list(call.keys)
        found = await self.service.bulk_get(named, keys, call.parallelism, ctx.info.trace)
        reply = self._bulk_response()
        for key, item in zip(keys, found, strict=True):
            entry = reply.items.add(key=key)
            if isinstance(item, str):
                entry.error = item
            elif item is not None:
                entry.data = item.value
                entry.etag = item.etag
                expires = expire_time(item)
                if expires is not None:
                    entry.metadata[TTL_EXPIRE_TIME] = expires
        return reply

    async def _delete(self, call: DeleteStateRequest, ctx: RequestContext) -> Message:
        named = self.service.store(call.store_name)
        request = DeleteRequest(call.key, _etag(call), _concurrency(call))
        await self.service.delete(named, [request], ctx.info.trace)
        return empty_pb2.Empty()

    async def _delete_bulk(self, call: DeleteBulkStateRequest, ctx: RequestContext) -> Message:
        named = self.service.store(call.store_name)
        requests = [DeleteRequest(s.key, _etag(s), _concurrency(s)) for s in call.states]
        await self.service.delete(named, requests, ctx.info.trace)
        return empty_pb2.Empty()

    async def _transaction(
        self, call: ExecuteStateTransactionRequest, ctx: RequestContext
    ) -> Message:
        named = self.service.store(call.storeName)
        self.service.require_transactions(named)
        operations: list[SetRequest | DeleteRequest] = []
        for op in call.operations:
            item = op.request
            if op.operationType == "upsert":
                operations.append(_set_request(item, dict(call.metadata)))
            elif op.operationType == "delete":
                operations.append(DeleteRequest(item.key, _etag(item), _concurrency(item)))
            else:
                raise errors.unsupported_operation(op.operationType)
        await self.service.transact(named, operations, ctx.info.trace)
        return empty_pb2.Empty()

    async def _query(self, call: QueryStateRequest, ctx: RequestContext) -> Message:
        named = self.service.store(call.store_name)
        try:
            query = parse_query(call.query)
        except QueryError as exc:
            raise errors.malformed(f"failed parsing query: {exc}") from None
        result = await self.service.query(named, query, ctx.info.trace)
        reply = self._query_response()
        for item in result.items:
            reply.results.add(key=item.key, data=item.value, etag=item.etag)
        if result.token:
            reply.token = result.token
        return reply


def _set_request(item: StateItemMessage, shared: dict[str, str] | None = None) -> SetRequest:
    """The value bytes are stored exactly as sent."""
    metadata = {**(shared or {}), **dict(item.metadata)}
    return set_request(item.key, item.value, _etag(item), _concurrency(item), metadata)
