"""`pubsub.redis`: Dapr's Redis Streams broker on the official redis client, bridged to trio."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar, cast

import redis
import trio
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from config.dapr.component import Component
from filters.pubsub.broker import (
    Feature,
    Handler,
    Message,
    PublishRequest,
    PubSubError,
    SubscribeRequest,
)
from filters.pubsub.coalesce import Coalescer
from filters.pubsub.redis_settings import RedisPubSubSettings

__all__ = ["RedisBroker", "RedisPubSubSettings"]

T = TypeVar("T")

log = logging.getLogger("meshwire.pubsub")

FIRST_BACKOFF, MAX_BACKOFF = 0.05, 2.0  # seconds between attempts while Redis is away

# Entry fields. Dapr writes "data" and "metadata" (the publish metadata as a JSON object) and
# reads only those; "contentType" is ours, and Dapr sidecars sharing the stream ignore it.
DATA, METADATA, CONTENT_TYPE = b"data", b"metadata", b"contentType"

PRUNE_IDLE = 3600.0  # seconds a consumer with nothing pending may stay idle before it is removed

# Every subscription registers a consumer of its own, so each sidecar restart leaves one behind.
# Removes the group's consumers idle longer than ARGV[2] ms that hold no pending entry; atomic,
# so no entry can be handed to one between the check and XGROUP DELCONSUMER (a live consumer
# removed this way is recreated by its next XREADGROUP). Returns how many went.
_PRUNE = """
local removed = 0
for _, fields in ipairs(redis.call("XINFO", "CONSUMERS", KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  if info["pending"] == 0 and info["idle"] > tonumber(ARGV[2]) then
    redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], info["name"])
    removed = removed + 1
  end
end
return removed
"""


Entry = tuple[bytes, dict[bytes, bytes] | None]  # (stream id, fields); None: entry deleted


_Entry = tuple[str, dict[FieldT, EncodableT]]  # a stream and the fields of its new entry


class RedisBroker:
    """A stream per topic, a consumer group per subscriber group, a consumer per subscription.

    Publishing is one XADD on a pooled connection. Each subscription blocks in XREADGROUP on a
    connection of its own, acknowledges with XACK once the handler returned, and every
    `redeliverInterval` claims (XAUTOCLAIM) the group's entries left pending longer than
    `processingTimeout`: those of failed deliveries and of consumers that died. Blocking calls
    run on worker threads, the pooled ones under a CapacityLimiter as large as the pool."""

    features: frozenset[Feature] = frozenset()

    def __init__(self, settings: RedisPubSubSettings, *, name: str = "redis") -> None:
        self.settings = settings
        self.name = name
        self.client = _client(settings)
        self.prune = self.client.register_script(_PRUNE)
        self._limiter = trio.CapacityLimiter(settings.pool_size)
        self._publishes = Coalescer[_Entry](self._xadd_all)

    @classmethod
    def from_component(cls, component: Component) -> RedisBroker:
        """The broker for a `pubsub.redis` Component; PubSubError names a bad metadata value."""
        return cls(RedisPubSubSettings.parse(component), name=component.name)

    async def init(self) -> None:
        await self.call(self.client.ping)

    async def publish(self, request: PublishRequest) -> None:
        """XADD; publishes that arrive while one round trip is in flight share the next one
        (one pipeline, one thread hop), so concurrent publishers do not queue for threads."""
        try:
            await self._publishes.submit((request.topic, _fields(request)))
        except redis.RedisError as exc:
            raise self.error(exc) from exc

    async def _xadd_all(self, batch: list[_Entry]) -> list[BaseException | None]:
        trim = self._trim()

        def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for topic, fields in batch:
                pipe.xadd(topic, fields, **trim)
            results: list[Any] = pipe.execute(raise_on_error=False)
            return results

        return [r if isinstance(r, Exception) else None for r in await self.run(send)]

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await _Subscription(self, request, handler).run(task_status)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.client.close, limiter=self._limiter)

    async def run(self, call: Callable[[], T], *, abandon: bool = False) -> T:
        """`call()` on a pooled connection, on a worker thread; redis errors pass through."""
        return await trio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=abandon)

    async def call(self, call: Callable[[], T], *, abandon: bool = False) -> T:
        """`run`, with redis errors turned into PubSubError."""
        try:
            return await self.run(call, abandon=abandon)
        except redis.RedisError as exc:
            raise self.error(exc) from exc

    def error(self, exc: Exception) -> PubSubError:
        return PubSubError(f"pubsub {self.name}: redis at {self.settings.address}: {exc}")

    def _trim(self) -> dict[str, Any]:
        if self.settings.max_len_approx is not None:
            return {"maxlen": self.settings.max_len_approx, "approximate": True}
        if self.settings.stream_ttl is not None:
            oldest = int((time.time() - self.settings.stream_ttl) * 1000)
            return {"minid": f"{oldest}-1", "approximate": True}
        return {}


class _Subscription:
    """One `subscribe` call: its consumer, reader, in-flight entries and acknowledgements."""

    def __init__(self, broker: RedisBroker, request: SubscribeRequest, handler: Handler) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.topic = request.topic
        self.group = request.group
        self.consumer = f"{request.group}-{uuid.uuid4().hex}"
        self.handler = handler
        self.slots = trio.Semaphore(max(1, request.concurrency))
        # Entries this consumer read or claimed and has not finished with (in a handler, or
        # waiting for a slot or for their XACK): a reclaim pass that finds them again skips them.
        self.held: set[bytes] = set()
        self.acks = _Acker(self)

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        await self.create_group()
        task_status.started()
        await self.prune_consumers()
        reader = _Reader(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.acks.run)
                if self.settings.redelivers:
                    nursery.start_soon(self.reclaim_loop, nursery)
                await self.read_loop(reader, nursery)
        finally:
            reader.close()

    async def create_group(self) -> None:
        """XGROUP CREATE at "0" as Dapr does (a new group reads the stream from its start);
        waits for Redis to come back, and raises only when Redis refuses the group."""
        backoff = _Backoff()
        create = partial(self.broker.client.xgroup_create, self.topic, self.group, "0", True)
        while True:
            try:
                await self.broker.run(create)
                return
            except redis.ResponseError as exc:
                if str(exc).startswith("BUSYGROUP"):
                    return
                raise self.broker.error(exc) from exc
            except redis.RedisError as exc:
                log.warning("%s: creating group %s: %s", self.topic, self.group, exc)
                await backoff.sleep()

    async def prune_consumers(self) -> None:
        """Remove the consumers earlier subscriptions left behind (best effort)."""
        prune = partial(self.broker.prune, [self.topic], [self.group, int(PRUNE_IDLE * 1000)])
        try:
            removed = await self.broker.call(prune)
        except PubSubError as exc:
            log.warning("%s: removing idle consumers of %s: %s", self.topic, self.group, exc)
        else:
            if removed:
                log.info("%s: removed %s idle consumers of %s", self.topic, removed, self.group)

    async def read_loop(self, reader: _Reader, nursery: trio.Nursery) -> None:
        backoff = _Backoff()
        while True:
            try:
                entries = await reader.read()
            except redis.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise self.broker.error(exc) from exc
                log.warning("%s: group %s is gone (Redis lost data?); recreating it",
                            self.topic, self.group)  # fmt: skip
                await self.create_group()
                continue
            except redis.RedisError as exc:
                log.warning("%s: reading as %s: %s", self.topic, self.consumer, exc)
                await backoff.sleep()
                continue
            backoff.reset()
            await self.dispatch(entries, nursery)

    async def reclaim_loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                await self.reclaim(nursery)
            except PubSubError as exc:
                log.warning("%s: reclaiming pending entries of %s: %s", self.topic, self.group, exc)
            await trio.sleep(self.settings.redeliver_interval)

    async def reclaim(self, nursery: trio.Nursery) -> None:
        """Take over every entry of the group pending longer than processingTimeout."""
        min_idle = int(self.settings.processing_timeout * 1000)
        start: bytes = b"0-0"
        while True:
            claim = partial(
                self.broker.client.xautoclaim,
                self.topic,
                self.group,
                self.consumer,
                min_idle,
                start,
                self.settings.queue_depth,
            )
            start, entries, *_ = await self.broker.call(claim)
            await self.dispatch(entries, nursery)
            if start == b"0-0":
                return

    async def dispatch(self, entries: list[Entry], nursery: trio.Nursery) -> None:
        """Start a delivery per entry, in stream order, each once a slot is free."""
        for entry_id, fields in entries:
            if entry_id in self.held:
                continue
            if fields is None:  # trimmed away while pending: nothing left to deliver
                self.acks.ack(entry_id)
                continue
            self.held.add(entry_id)
            await self.slots.acquire()
            nursery.start_soon(self.deliver, entry_id, self.message(entry_id, fields))

    async def deliver(self, entry_id: bytes, message: Message) -> None:
        try:
            await self.handler(message)
        except Exception as exc:
            log.info("%s: delivery of %s failed: %s", self.topic, entry_id.decode(), exc)
            if self.settings.ack_on_error:
                self.acks.ack(entry_id)
            else:
                self.held.discard(entry_id)  # stays pending: the next reclaim pass retries it
        else:
            self.acks.ack(entry_id)
        finally:
            self.slots.release()

    def message(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> Message:
        content_type = fields.get(CONTENT_TYPE)
        return Message(
            topic=self.topic,
            data=fields.get(DATA, b""),
            content_type=content_type.decode() if content_type else None,
            metadata=self.metadata(entry_id, fields.get(METADATA)),
        )

    def metadata(self, entry_id: bytes, raw: bytes | None) -> dict[str, str]:
        if not raw:
            return {}
        try:
            found = json.loads(raw)
        except ValueError:
            found = None
        if isinstance(found, dict) and all(isinstance(v, str) for v in found.values()):
            return found
        log.warning("%s: entry %s: metadata is not a JSON object of strings; ignored",
                    self.topic, entry_id.decode())  # fmt: skip
        return {}


class _Reader:
    """The subscription's own connection, blocked in XREADGROUP on a worker thread."""

    def __init__(self, subscription: _Subscription) -> None:
        self._sub = subscription
        self.client = _reader_client(subscription.settings)
        self._limiter = trio.CapacityLimiter(1)

    async def read(self) -> list[Entry]:
        try:
            return await trio.to_thread.run_sync(
                self._read, limiter=self._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            # The abandoned thread is still blocked in XREADGROUP: closing its socket ends the
            # read on the server too, so no entry is handed to a consumer that is going away.
            self.close()
            raise

    def close(self) -> None:
        if self.client.connection is not None:
            self.client.connection.disconnect()  # type: ignore[no-untyped-call]

    def _read(self) -> list[Entry]:
        sub = self._sub
        reply = self.client.xreadgroup(
            sub.group,
            sub.consumer,
            {sub.topic: ">"},
            count=sub.settings.queue_depth,
            block=int(sub.settings.block * 1000),
        )
        # RESP2 (bytes, no decoding): [[stream, [(id, {field: value}), ...]]], or None
        streams = cast("list[tuple[bytes, list[Entry]]] | None", reply)
        return [entry for _stream, entries in streams or [] for entry in entries]


class _Acker:
    """XACKs the ids handlers finished with, many per call when they finish faster than Redis
    answers; ids whose XACK failed are retried (with backoff) until it succeeds."""

    def __init__(self, subscription: _Subscription) -> None:
        self._sub = subscription
        self._ids: list[bytes] = []
        self._ready = trio.Event()

    def ack(self, entry_id: bytes) -> None:
        self._ids.append(entry_id)
        self._ready.set()

    async def run(self) -> None:
        backoff = _Backoff()
        try:
            while True:
                await self._ready.wait()
                if await self._flush():
                    backoff.reset()
                else:
                    await backoff.sleep()
        finally:
            # Cancelled: acknowledge what the app already has, briefly; what is left over is
            # redelivered later, which at-least-once allows.
            with trio.CancelScope(shield=True), trio.move_on_after(self._sub.settings.block):
                await self._flush(abandon=True)

    async def _flush(self, *, abandon: bool = False) -> bool:
        ids, self._ids, self._ready = self._ids, [], trio.Event()
        if not ids:
            return True
        sub = self._sub
        try:
            await sub.broker.call(
                partial(sub.broker.client.xack, sub.topic, sub.group, *ids), abandon=abandon
            )
        except PubSubError as exc:
            log.warning("%s: acknowledging %d entries: %s", sub.topic, len(ids), exc)
            self._ids[:0] = ids
            self._ready.set()
            return False
        sub.held.difference_update(ids)
        return True


class _Backoff:
    """Exponential waits between attempts, reset after a success."""

    def __init__(self) -> None:
        self._delay = FIRST_BACKOFF

    async def sleep(self) -> None:
        await trio.sleep(self._delay)
        self._delay = min(MAX_BACKOFF, self._delay * 2)

    def reset(self) -> None:
        self._delay = FIRST_BACKOFF


def _client(settings: RedisPubSubSettings) -> redis.Redis:
    """The pooled client; it retries a command whose connection failed (a publish may then
    land twice, which at-least-once allows)."""
    backoff = ExponentialBackoff(cap=settings.max_retry_interval, base=settings.min_retry_interval)
    return redis.Redis(
        **_connection_options(settings),
        socket_timeout=settings.read_timeout,
        max_connections=settings.pool_size,
        retry=Retry(backoff, settings.max_retries, supported_errors=(redis.ConnectionError,)),
    )


def _reader_client(settings: RedisPubSubSettings) -> redis.Redis:
    """A client of one connection for blocking reads, whose timeout outlasts the block; it
    never retries on its own (the subscription does, with backoff)."""
    timeout = settings.read_timeout
    return redis.Redis(
        **_connection_options(settings),
        socket_timeout=None if timeout is None else settings.block + timeout,
        single_connection_client=True,
        retry=Retry(NoBackoff(), 0),
    )


def _connection_options(settings: RedisPubSubSettings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "username": settings.username,
        "password": settings.password,
        "ssl": settings.tls,
        "ssl_cert_reqs": "required" if settings.tls_verify else "none",
        "socket_connect_timeout": settings.dial_timeout,
    }


def _fields(request: PublishRequest) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {DATA: request.data}
    if request.metadata:
        fields[METADATA] = json.dumps(dict(request.metadata), separators=(",", ":"))
    if request.content_type:
        fields[CONTENT_TYPE] = request.content_type
    return fields
