"""`state.redis`: Dapr's Redis state store on the official redis client, bridged to trio."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
import trio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.dapr.component import Component
from filters.dapr.params import printable
from filters.state.redis_settings import RedisSettings, parse
from filters.state.store import (
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

__all__ = ["RedisSettings", "RedisStore"]

T = TypeVar("T")


# One script applies every write (a single set/delete is a one-operation transaction), so the
# etag / first-write checks and the writes happen atomically on the server: writers in other
# processes cannot interleave. KEYS[i] is operation i's key; ARGV holds 6 fields per operation:
# kind ("set"|"del"), check (""|"etag"|"first"), etag, data, ttl seconds (<= 0: none),
# content type ("": none). Every check runs first, against the state the earlier operations
# of the same call would leave; nothing is written unless all pass. Returns 0, or the 1-based
# index of the first operation whose check failed.
_APPLY = """
local staged, versions = {}, {}
local function current(key)
  if staged[key] ~= nil then return staged[key] end
  if redis.call("EXISTS", key) == 0 then return false end
  if redis.call("TYPE", key).ok ~= "hash" then return "" end
  return redis.call("HGET", key, "version") or ""
end
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 6
  local version = current(key)
  if ARGV[b + 2] == "etag" and version ~= ARGV[b + 3] then return i end
  if ARGV[b + 2] == "first" and version then return i end
  if ARGV[b + 1] == "del" then
    staged[key] = false
  else
    staged[key] = tostring((tonumber(version) or 0) + 1)
    versions[i] = staged[key]
  end
end
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 6
  if ARGV[b + 1] == "del" then
    redis.call("DEL", key)
  else
    if redis.call("EXISTS", key) == 1 and redis.call("TYPE", key).ok ~= "hash" then
      redis.call("DEL", key)
    end
    redis.call("HSET", key, "data", ARGV[b + 4], "version", versions[i])
    if ARGV[b + 6] == "" then
      redis.call("HDEL", key, "contentType")
    else
      redis.call("HSET", key, "contentType", ARGV[b + 6])
    end
    local ttl = tonumber(ARGV[b + 5])
    if ttl > 0 then redis.call("EXPIRE", key, ttl) else redis.call("PERSIST", key) end
  end
end
return 0
"""


class RedisStore:
    """Values live as Dapr's do: a hash per key with `data` (the bytes) and `version` (the
    etag), plus `contentType` when one was given. Every blocking call runs on a worker thread
    under a CapacityLimiter as large as the connection pool."""

    features: frozenset[Feature] = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL})

    def __init__(self, settings: RedisSettings, *, name: str = "redis") -> None:
        self.settings = settings
        self.name = name
        # Retry only when the connection failed: a timed-out script may have run, and running
        # it again would apply the writes twice.
        retry = Retry(
            ExponentialBackoff(cap=settings.max_retry_backoff, base=0.008),
            settings.max_retries,
            supported_errors=(redis.ConnectionError,),
        )
        self._client = redis.Redis(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            username=settings.username,
            password=settings.password,
            ssl=settings.tls,
            socket_connect_timeout=settings.dial_timeout,
            socket_timeout=settings.read_timeout,
            max_connections=settings.pool_size,
            retry=retry,
        )
        self._apply = self._client.register_script(_APPLY)
        self._limiter = trio.CapacityLimiter(settings.pool_size)

    @classmethod
    def from_component(cls, component: Component) -> RedisStore:
        """The store for a `state.redis` Component; StateError names a bad metadata value."""
        return cls(parse(component), name=component.name)

    async def init(self) -> None:
        await self._run(self._client.ping)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._client.close, limiter=self._limiter)

    async def get(self, key: str) -> StateItem | None:
        return (await self.bulk_get([key]))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        if not keys:
            return []
        return await self._run(self._read, list(keys))

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def transact(self, operations: Sequence[SetRequest | DeleteRequest]) -> None:
        if not operations:
            return
        keys: list[str] = []
        args: list[bytes | str | int] = []
        for op in operations:
            keys.append(op.key)
            args.extend(self._arguments(op))
        failed = await self._run(lambda: int(self._apply(keys=keys, args=args)))
        if failed:
            op = operations[failed - 1]
            if op.etag is not None:
                raise ETagMismatch(f"etag mismatch for key {printable(op.key)}")
            raise ETagMismatch(f"first-write: key {printable(op.key)} already exists")

    async def query(self, query: Query) -> QueryResult:
        raise NotSupported(f"state store {self.name}: redis does not support the query API")

    def _arguments(self, op: SetRequest | DeleteRequest) -> list[bytes | str | int]:
        check, etag = "", ""
        if op.etag is not None:
            check, etag = "etag", _version(op.key, op.etag)
        elif isinstance(op, SetRequest) and op.concurrency == "first-write":
            check = "first"
        if isinstance(op, DeleteRequest):
            return ["del", check, etag, b"", 0, ""]
        ttl = op.ttl if op.ttl is not None else self.settings.default_ttl
        return ["set", check, etag, op.value, ttl or 0, op.content_type or ""]

    def _read(self, keys: list[str]) -> list[StateItem | None]:
        pipe = self._client.pipeline(transaction=True)
        for key in keys:
            pipe.hmget(key, ["data", "version", "contentType"])
            pipe.pexpiretime(key)
        replies = pipe.execute()
        items: list[StateItem | None] = []
        for i, key in enumerate(keys):
            (data, version, content_type), expire_ms = replies[2 * i], replies[2 * i + 1]
            if data is None or version is None:
                items.append(None)
                continue
            items.append(
                StateItem(
                    key=key,
                    value=bytes(data),
                    etag=version.decode(),
                    content_type=content_type.decode() if content_type is not None else None,
                    expires_at=expire_ms / 1000 if expire_ms > 0 else None,
                )
            )
        return items

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        # Not abandoned on cancel: a write in flight must finish (its socket timeouts bound it)
        # before the caller learns anything, or the caller could not tell whether it applied.
        try:
            return await trio.to_thread.run_sync(call, *args, limiter=self._limiter)
        except redis.RedisError as exc:
            raise StateError(
                f"state store {self.name}: redis at {self.settings.address}: {exc}"
            ) from exc


def _version(key: str, etag: str) -> str:
    """The version an etag names; ETagInvalid unless it is a number this store could issue."""
    if etag == "":
        return "-"  # never a stored version: an empty etag is a condition that cannot hold
    text = etag.strip()
    if not text.isascii() or not text.isdigit():
        raise ETagInvalid(
            f"invalid etag {printable(etag)} for key {printable(key)}: redis etags are numbers"
        )
    return str(int(text))
