"""A body that counts its bytes and reports, once, when it ended, failed or was abandoned."""

from __future__ import annotations

from collections.abc import Callable

from proxy.http.model import Body, Headers

# Called with None when the body ended cleanly or was closed, else with what interrupted it.
OnEnd = Callable[[BaseException | None], None]


class EndingBody:
    """Passes chunks through, counting them in `count`; calls `on_end` (if any) once, at the
    end, on a failed read or on aclose."""

    __slots__ = ("_body", "_on_end", "count", "length", "trailers")

    def __init__(self, body: Body, on_end: OnEnd | None = None) -> None:
        self._body = body
        self._on_end: OnEnd | None = on_end
        self.count = 0
        self.length = body.length
        self.trailers: Headers | None = body.trailers

    def _finish(self, error: BaseException | None) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(error)

    async def read(self) -> bytes:
        try:
            chunk = await self._body.read()
        except BaseException as exc:  # Cancelled too: the span must still end
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
