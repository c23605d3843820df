"""Buffer filter: reads the whole request body first (413 above the limit), as Envoy's buffer."""

from __future__ import annotations

from proxy.chain import Handler
from proxy.http.model import BytesBody, Request, Response, read_all


class BufferFilter:
    def __init__(self, max_request_bytes: int) -> None:
        self._limit = max_request_bytes

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        trailers_from = request.body
        data = await read_all(request.body, self._limit)
        request.body = BytesBody(data, trailers_from.trailers)
        request.headers = [h for h in request.headers if h[0] != b"transfer-encoding"]
        if request.headers and any(h[0] == b"content-length" for h in request.headers):
            request.headers = [h for h in request.headers if h[0] != b"content-length"]
        request.headers.append((b"content-length", str(len(data)).encode()))
        return await next(request)
