"""The Store protocol every state backend implements, with Dapr's semantics spelled out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol


class Feature(StrEnum):
    """Dapr's state store capabilities, as /v1.0/metadata lists them."""

    ETAG = "ETAG"
    TRANSACTIONAL = "TRANSACTIONAL"
    TTL = "TTL"
    QUERY_API = "QUERY_API"
    ACTOR = "ACTOR"  # set by the runtime for the store marked actorStateStore


Concurrency = Literal["first-write", "last-write"]


@dataclass(frozen=True, slots=True)
class StateItem:
    """A stored value: `value` is exactly the bytes saved (JSON text or raw bytes)."""

    key: str
    value: bytes
    etag: str
    content_type: str | None = None
    expires_at: float | None = None  # epoch seconds, for stores with TTL (metadata.ttlExpireTime)


@dataclass(frozen=True, slots=True)
class SetRequest:
    """Save `value` under `key`.

    With `etag` (even "") the write is conditional: it succeeds only if the stored etag equals it
    (and the key exists) — `ETagMismatch` otherwise. Without an etag: last-write wins, unless
    `concurrency` is first-write, in which case the key must not exist yet.
    `ttl` seconds (None: forever; a stored TTL is removed by a save without one).
    """

    key: str
    value: bytes
    etag: str | None = None
    concurrency: Concurrency = "last-write"
    ttl: int | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """Delete `key`; with `etag` only if it matches (`ETagMismatch` otherwise). Deleting a
    missing key without an etag is not an error."""

    key: str
    etag: str | None = None
    concurrency: Concurrency = "last-write"


@dataclass(frozen=True, slots=True)
class QueryResult:
    items: Sequence[StateItem]
    token: str | None = None  # for the next page; None: no more


@dataclass(frozen=True, slots=True)
class Query:
    """Dapr's query language, already decoded: `filter` is the raw JSON object
    ({"EQ": {...}} | {"IN": {...}} | {"AND": [...]} | {"OR": [...]}), `sort` a list of
    (dotted key, "ASC"|"DESC"), `limit`/`token` the page. Keys in filters and sorts address
    fields of the JSON value, e.g. "person.org"."""

    filter: Mapping[str, object] | None = None
    sort: Sequence[tuple[str, str]] = field(default_factory=tuple)
    limit: int | None = None
    token: str | None = None


class StateError(Exception):
    """A store failure other than the typed ones below (the API answers 500)."""


class ETagMismatch(StateError):
    """The etag did not match, or first-write found the key taken (409, ABORTED)."""


class ETagInvalid(StateError):
    """The etag is not one this store could have issued (400, INVALID_ARGUMENT)."""


class NotSupported(StateError):
    """The store lacks the feature (transactions, query): 500 ERR_STATE_STORE_NOT_SUPPORTED."""


class Store(Protocol):
    """A state store. Keys are full keys (the API applies Dapr's key prefix before calling).

    Every operation is atomic on its own; `transact` applies all operations or none (using the
    backend's own atomicity: SQL transactions, Redis MULTI/Lua — never a lock inside one
    process only). Etags are opaque strings that change on every write.
    """

    features: frozenset[Feature]

    async def init(self) -> None:
        """Connect and create what is needed (tables); raise StateError with the reason."""

    async def get(self, key: str) -> StateItem | None: ...

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]: ...

    async def set(self, request: SetRequest) -> None: ...

    async def delete(self, request: DeleteRequest) -> None: ...

    async def transact(self, operations: Sequence[SetRequest | DeleteRequest]) -> None: ...

    async def query(self, query: Query) -> QueryResult:
        """Only with Feature.QUERY_API; NotSupported otherwise."""
        ...

    async def aclose(self) -> None: ...
