"""Byte counting and bounded path labels for Dapr's HTTP metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.http.model import Body, Headers

# Called once with the bytes that went through and what interrupted the body (None: it ended).
OnCounted = Callable[[int, BaseException | None], None]


class CountingBody:
    """Passes chunks through, counting them; reports once at the end, on failure or aclose."""

    __slots__ = ("_body", "_on_end", "count", "length", "started", "trailers")

    def __init__(self, body: Body, on_end: OnCounted | None = None) -> None:
        self._body = body
        self._on_end = on_end
        self.count = 0
        self.length = body.length
        self.trailers: Headers | None = body.trailers
        self.started = time.monotonic()

    def _finish(self, error: BaseException | None) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self.count, error)

    async def read(self) -> bytes:
        try:
            chunk = await self._body.read()
        except BaseException as exc:
            self._finish(exc)
            raise
        if chunk:
            self.count += len(chunk)
        else:
            self.trailers = self._body.trailers
            self._finish(None)
        return chunk

    async def aclose(self) -> None:
        try:
            await self._body.aclose()
        finally:
            self._finish(None)


def api_path(path: bytes, invocation: bool) -> str:
    """Dapr's low-cardinality `path` label: the API route, never a caller-chosen value (app ids
    and method paths would let any client mint new series)."""
    if invocation or path.startswith(b"/v1.0/invoke/"):
        return "/v1.0/invoke/*/method/*"
    if path.startswith(b"/v1.0/metadata/"):
        return "/v1.0/metadata/*"
    for api in (b"/v1.0/state/", b"/v1.0-alpha1/state/"):  # store names are caller-chosen too
        if path.startswith(api):
            return api.decode() + "*"
    text = path.decode("latin-1")
    return text if text.startswith("/v1.0/") and text.count("/") <= 3 else "other"
