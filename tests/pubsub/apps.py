"""A subscriber app for the pub/sub tests: serves /dapr/subscribe, records every delivery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from filters.dapr.bodies import read_body
from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import backend


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.body)
        return value


# Given a delivery, the app's (status, JSON body or None) answer.
Answer = Callable[[Received], tuple[int, object]]


def success(received: Received) -> tuple[int, object]:
    return 200, None


@dataclass
class SubscriberApp:
    """`subscriptions` is what GET /dapr/subscribe returns (None: 404)."""

    subscriptions: list[dict[str, object]] | None = None
    answer: Answer = success
    delay: float = 0.0  # seconds the app spends on each delivery
    received: list[Received] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, request: Request) -> Response:
        path = request.target.decode()
        body = await read_body(request.body, 64 << 20)
        if request.method == b"GET" and path == "/dapr/subscribe":
            if self.subscriptions is None:
                return Response.text(404, "no subscriptions")
            return _json(200, self.subscriptions)
        got = Received(
            path,
            {k.decode(): v.decode("latin-1") for k, v in request.headers},
            body,
        )
        if self.delay:
            await trio.sleep(self.delay)
        self.received.append(got)
        self.changed.set()
        self.changed = trio.Event()
        status, value = self.answer(got)
        return _json(status, value) if value is not None else Response(status, [])

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, condition: Callable[[], bool], deadline: float = 15) -> None:
        with trio.fail_after(deadline):
            while not condition():
                await self.changed.wait()


def _json(status: int, value: object) -> Response:
    body = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return Response(status, headers, BytesBody(body))


@asynccontextmanager
async def subscriber_app(app: SubscriberApp) -> AsyncIterator[int]:
    async with backend(app) as port:
        yield port
