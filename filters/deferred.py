"""A terminal built on its first request, with the modules it needs imported off the event loop."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import trio

from proxy.chain import Handler
from proxy.http.model import Request, Response

__all__ = ["Deferred"]


class Deferred:
    """Stands in for the terminal `build()` returns until a request comes: a listener that is
    bound but never called (the Dapr gRPC API for an app that only speaks HTTP) never loads
    what its terminal imports (protobuf and Dapr's messages, ~5 MB).

    The first request imports `modules` on a worker thread, so the loop keeps serving the other
    listeners meanwhile (an import is a few hundred ms of bytecode compilation), then calls
    `build` on the loop; requests that arrive meanwhile wait for the same build. A failing
    import or build fails that request and is tried again by the next one.
    """

    def __init__(self, build: Callable[[], Handler], modules: Sequence[str]) -> None:
        self._build = build
        self._modules = tuple(modules)
        self._handler: Handler | None = None
        self._building = trio.Lock()

    async def __call__(self, request: Request, /) -> Response:
        handler = self._handler
        if handler is None:
            handler = await self._built()
        return await handler(request)

    async def _built(self) -> Handler:
        async with self._building:
            if self._handler is None:
                for name in self._modules:
                    await trio.to_thread.run_sync(importlib.import_module, name)
                self._handler = self._build()
            return self._handler
