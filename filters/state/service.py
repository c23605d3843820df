"""The state API's operations, shared by HTTP and gRPC: store lookup, keys, errors, observation."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

import trio

from filters.dapr.params import parse_go_int, printable
from filters.state import api_errors as errors
from filters.state.api_errors import StateApiError
from filters.state.keys import IllegalKey, KeyScheme
from filters.state.observe import Observer
from filters.state.query import QueryError
from filters.state.registry import NamedStore, StateStores
from filters.state.store import (
    Concurrency,
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Feature,
    NotSupported,
    Query,
    QueryResult,
    SetRequest,
    StateError,
    StateItem,
)
from filters.tracing.state import RequestTrace

T = TypeVar("T")
R = TypeVar("R", bound=SetRequest | DeleteRequest)

TTL_IN_SECONDS = "ttlInSeconds"
CONTENT_TYPE = "contentType"
TTL_EXPIRE_TIME = "ttlExpireTime"
DEFAULT_PARALLELISM = 100  # daprd's limit on concurrent reads in a bulk get
MAX_TTL_SECONDS = 2**31 - 1  # components-contrib's ParseTTL: math.MaxInt32
_LAST_TIMESTAMP = "9999-12-31T23:59:59Z"


def concurrency(value: str) -> Concurrency:
    """Dapr's options.concurrency: first-write, or last-write for anything else."""
    return "first-write" if value == "first-write" else "last-write"


def set_request(
    key: str,
    value: bytes,
    etag: str | None,
    concurrency_: Concurrency,
    metadata: Mapping[str, str],
) -> SetRequest:
    """A save as the store takes it; `ttlInSeconds` and `contentType` come from its metadata
    (a TTL of -1 means none, as in Dapr). Both are checked here, before any store sees them:
    a value a store accepted but could not read back would break every later GET."""
    content_type = metadata.get(CONTENT_TYPE) or None
    if content_type is not None and not content_type.isprintable():
        raise errors.malformed(f"{CONTENT_TYPE} {printable(content_type)} is not a header value")
    return SetRequest(key, value, etag, concurrency_, ttl_seconds(metadata), content_type)


def ttl_seconds(metadata: Mapping[str, str]) -> int | None:
    """`ttlInSeconds` as Dapr's stores parse it: a base-10 integer from -1 to 2^31-1 (-1, or
    none: no expiry); anything else is ERR_MALFORMED_REQUEST."""
    raw = metadata.get(TTL_IN_SECONDS)
    if raw is None or not raw.strip():
        return None
    ttl = parse_go_int(raw.strip())
    if ttl is None:
        raise errors.malformed(f"{TTL_IN_SECONDS} must be an integer: {printable(raw[:40])}")
    if not -1 <= ttl <= MAX_TTL_SECONDS:
        raise errors.malformed(f"{TTL_IN_SECONDS} must be from -1 to {MAX_TTL_SECONDS}: {ttl}")
    return None if ttl == -1 else ttl


def expire_time(item: StateItem) -> str | None:
    """`metadata.ttlExpireTime` as Dapr's stores give it: RFC 3339 in UTC (a stored expiry
    past what a timestamp can show reads as the last second of year 9999)."""
    if item.expires_at is None:
        return None
    try:
        moment = datetime.fromtimestamp(math.floor(item.expires_at), UTC)
    except (OverflowError, OSError, ValueError):
        return _LAST_TIMESTAMP if item.expires_at > 0 else None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class StateService:
    """Every call names a store and uses the client's keys; stored keys carry the store's
    prefix and are stripped back on the way out. Failures are StateApiErrors."""

    def __init__(self, stores: StateStores, observer: Observer) -> None:
        self.stores = stores
        self.observer = observer

    def store(self, name: str) -> NamedStore:
        if len(self.stores) == 0:
            raise errors.not_configured()
        named = self.stores.get(name)
        if named is None:
            raise errors.not_found(name)
        return named

    @staticmethod
    def full_key(named: NamedStore, key: str) -> str:
        if not key:
            raise errors.malformed('"key" is a required field')
        try:
            return named.keys.full(key)
        except IllegalKey as exc:
            raise errors.malformed(str(exc)) from None

    async def _call(
        self,
        named: NamedStore,
        operation: str,
        trace: RequestTrace | None,
        work: Callable[[], Awaitable[T]],
        batch: int | None = None,
    ) -> T:
        return await self.observer.call(named.name, named.system, operation, trace, work, batch)

    async def get(
        self, named: NamedStore, key: str, trace: RequestTrace | None
    ) -> StateItem | None:
        full = self.full_key(named, key)
        try:
            return await self._call(named, "get", trace, lambda: named.store.get(full))
        except StateError as exc:
            message = f"fail to get {key} from state store {named.name}: {exc}"
            raise errors.store_failure("ERR_STATE_GET", message, exc) from exc

    async def bulk_get(
        self, named: NamedStore, keys: Sequence[str], parallelism: int, trace: RequestTrace | None
    ) -> list[StateItem | str | None]:
        """One entry per key, in order: the item, None when missing, or the error (a string)
        for the keys whose read failed. Keys are read in at most `parallelism` concurrent
        batches, each one native bulk read of the store."""
        full = [self.full_key(named, key) for key in keys]
        results: list[StateItem | str | None] = [None] * len(full)
        if not full:
            return results
        lanes = min(parallelism if parallelism > 0 else DEFAULT_PARALLELISM, len(full))
        size = -(-len(full) // lanes)

        async def read(start: int) -> None:
            chunk = full[start : start + size]
            try:
                found = await named.store.bulk_get(chunk)
            except StateError as exc:
                results[start : start + len(chunk)] = [str(exc)] * len(chunk)
                return
            results[start : start + len(chunk)] = found

        async def read_all() -> None:
            async with trio.open_nursery() as nursery:
                for start in range(0, len(full), size):
                    nursery.start_soon(read, start)

        await self._call(named, "bulk_get", trace, read_all, len(full))
        return results

    async def save(
        self, named: NamedStore, requests: Sequence[SetRequest], trace: RequestTrace | None
    ) -> None:
        """Each item in turn, as Dapr's BulkSet does (not one transaction)."""
        if not requests:
            return
        stored = [self._stored(named, r) for r in requests]

        async def write() -> None:
            for request in stored:
                await named.store.set(request)

        try:
            await self._call(named, "set", trace, write, len(stored))
        except StateError as exc:
            message = f"failed saving state in state store {named.name}: {_reason(exc)}"
            raise errors.store_failure("ERR_STATE_SAVE", message, exc) from exc

    async def delete(
        self, named: NamedStore, requests: Sequence[DeleteRequest], trace: RequestTrace | None
    ) -> None:
        stored = [self._stored(named, r) for r in requests]

        async def remove() -> None:
            for request in stored:
                await named.store.delete(request)

        operation = "delete" if len(stored) == 1 else "bulk_delete"
        try:
            await self._call(named, operation, trace, remove, len(stored))
        except StateError as exc:
            keys = ", ".join(r.key for r in requests)
            message = f"failed deleting state with key {keys}: {_reason(exc)}"
            raise errors.store_failure("ERR_STATE_DELETE", message, exc) from exc

    def require_transactions(self, named: NamedStore) -> None:
        if Feature.TRANSACTIONAL not in named.features:
            raise errors.not_supported(named.name, "transaction")

    async def transact(
        self,
        named: NamedStore,
        operations: Sequence[SetRequest | DeleteRequest],
        trace: RequestTrace | None,
    ) -> None:
        self.require_transactions(named)
        if not operations:
            return
        stored = [self._stored(named, op) for op in operations]

        async def work() -> None:
            await named.store.transact(stored)

        try:
            await self._call(named, "transaction", trace, work, len(stored))
        except NotSupported as exc:
            raise errors.not_supported(named.name, "transaction") from exc
        except StateError as exc:
            message = f"error while executing state transaction: {_reason(exc)}"
            raise errors.store_failure("ERR_STATE_TRANSACTION", message, exc) from exc

    async def query(
        self, named: NamedStore, query: Query, trace: RequestTrace | None
    ) -> QueryResult:
        """The page, keys stripped back to the client's."""
        if Feature.QUERY_API not in named.features:
            raise errors.not_supported(named.name, "query")
        try:
            result = await self._call(named, "query", trace, lambda: named.store.query(query))
        except QueryError as exc:
            raise errors.malformed(f"invalid query: {exc}") from exc
        except NotSupported as exc:
            raise errors.not_supported(named.name, "query") from exc
        except StateError as exc:
            message = f"failed query in state store {named.name}: {exc}"
            raise errors.store_failure("ERR_STATE_QUERY", message, exc) from exc
        items = [
            StateItem(KeyScheme.original(i.key), i.value, i.etag, i.content_type, i.expires_at)
            for i in result.items
        ]
        return QueryResult(items, result.token)

    def _stored(self, named: NamedStore, request: R) -> R:
        return replace(request, key=self.full_key(named, request.key))


__all__ = ["StateApiError", "StateService"]


def _reason(error: StateError) -> str:
    """What a caller may read: stores name the stored key, whose prefix (`appid||`) is ours."""
    if isinstance(error, ETagMismatch):
        return "possible etag mismatch"  # daprd's wording
    if isinstance(error, ETagInvalid):
        return "invalid etag value"
    return str(error)
