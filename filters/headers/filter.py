"""Headers filter: adds and removes request and response headers, all encoded once at build time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.chain import Handler
from proxy.http.model import Headers, Request, Response


def _encode(add: Mapping[str, str]) -> Headers:
    return [(k.lower().encode(), v.encode()) for k, v in add.items()]


class HeadersFilter:
    def __init__(
        self,
        request_add: Mapping[str, str],
        request_remove: Sequence[str],
        response_add: Mapping[str, str],
        response_remove: Sequence[str],
    ) -> None:
        self._req_add = _encode(request_add)
        self._req_drop = frozenset(n.lower().encode() for n in request_remove) | {
            k for k, _ in self._req_add
        }
        self._resp_add = _encode(response_add)
        self._resp_drop = frozenset(n.lower().encode() for n in response_remove) | {
            k for k, _ in self._resp_add
        }

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        if self._req_drop:
            request.headers = [h for h in request.headers if h[0] not in self._req_drop]
        request.headers.extend(self._req_add)
        response = await next(request)
        if self._resp_drop:
            response.headers = [h for h in response.headers if h[0] not in self._resp_drop]
        response.headers.extend(self._resp_add)
        return response
