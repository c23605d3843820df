"""Handler and Filter protocols, and the one function that composes a chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from proxy.http.model import Request, Response


class Handler(Protocol):
    """Anything that turns a request into a response: a terminal, or the rest of a chain."""

    async def __call__(self, request: Request, /) -> Response: ...


class Filter(Protocol):
    """One link of a chain, built once from frozen config.

    It may rewrite the request, answer locally, edit the response after `await next(request)`,
    or raise a typed ProxyError.
    """

    async def __call__(self, request: Request, next: Handler, /) -> Response: ...


class _Link:
    __slots__ = ("_filter", "_next")

    def __init__(self, filter: Filter, next: Handler) -> None:
        self._filter = filter
        self._next = next

    async def __call__(self, request: Request, /) -> Response:
        return await self._filter(request, self._next)


def build_chain(filters: Sequence[Filter], terminal: Handler) -> Handler:
    """filters[0] runs first; the terminal answers last. Composed once, at config time."""
    handler = terminal
    for f in reversed(filters):
        handler = _Link(f, handler)
    return handler
