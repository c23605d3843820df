"""`pubsub.in-memory`: topics and consumer groups inside this process; nothing survives it."""

from __future__ import annotations

from collections import deque

import trio

from config.dapr.component import Component
from filters.pubsub.broker import (
    Feature,
    Handler,
    Message,
    PublishRequest,
    SubscribeRequest,
)

__all__ = ["MemoryBroker"]

REDELIVERY_DELAY = 0.05  # seconds before a message the app did not take is offered again


class _Group:
    """One consumer group's queue: its members take turns; unacknowledged messages return."""

    def __init__(self) -> None:
        self._queue: deque[Message] = deque()
        self._changed = trio.Event()

    def put(self, message: Message, *, front: bool = False) -> None:
        if front:
            self._queue.appendleft(message)
        else:
            self._queue.append(message)
        self._changed.set()
        self._changed = trio.Event()

    async def take(self) -> Message:
        while not self._queue:
            await self._changed.wait()
        return self._queue.popleft()


class MemoryBroker:
    """Dapr's in-memory broker: a message published to a topic goes to every group that has
    subscribed to it so far, and to one member of each."""

    features: frozenset[Feature] = frozenset()

    def __init__(self) -> None:
        self._topics: dict[str, dict[str, _Group]] = {}

    @classmethod
    def from_component(cls, component: Component) -> MemoryBroker:
        return cls()

    async def init(self) -> None:
        pass

    async def publish(self, request: PublishRequest) -> None:
        message = Message(request.topic, request.data, request.content_type, request.metadata)
        for group in self._topics.get(request.topic, {}).values():
            group.put(message)
        await trio.lowlevel.checkpoint()

    async def subscribe(
        self,
        request: SubscribeRequest,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        group = self._topics.setdefault(request.topic, {}).setdefault(request.group, _Group())
        slots = trio.Semaphore(max(1, request.concurrency))
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()
                try:
                    message = await group.take()
                except BaseException:
                    slots.release()
                    raise
                nursery.start_soon(self._deliver, group, message, handler, slots)

    async def _deliver(
        self, group: _Group, message: Message, handler: Handler, slots: trio.Semaphore
    ) -> None:
        try:
            await handler(message)
        except Exception:
            with trio.CancelScope(shield=True):
                await trio.sleep(REDELIVERY_DELAY)
            group.put(message, front=True)
        except BaseException:
            group.put(message, front=True)  # cancelled mid-delivery: the group keeps it
            raise
        finally:
            slots.release()

    async def aclose(self) -> None:
        self._topics.clear()
