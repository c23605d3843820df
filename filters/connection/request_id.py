"""Connection-manager duties before any configured filter: x-request-id and x-forwarded-*."""

from __future__ import annotations

import random

from proxy.chain import Handler
from proxy.http.model import Request, Response

_REQUEST_ID = b"x-request-id"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"


class ConnectionManagerFilter:
    """Gives each request an id; records the client in x-forwarded-for/-proto (as Envoy's HCM)."""

    def __init__(self, *, generate_request_id: bool, use_remote_address: bool) -> None:
        self._generate = generate_request_id
        self._xff = use_remote_address
        self._random = random.Random()

    def _new_id(self) -> bytes:
        # A UUIDv4-shaped id from a per-filter PRNG: unique enough to correlate, cheap to make.
        n = self._random.getrandbits(128)
        h = f"{n:032x}"
        variant = "89ab"[n & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}".encode()

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        headers = request.headers
        rid: bytes | None = None
        xff_at = -1
        has_xfp = False
        for i, (name, value) in enumerate(headers):
            if name == _REQUEST_ID:
                rid = value
            elif name == _XFF:
                xff_at = i
            elif name == _XFP:
                has_xfp = True
        if rid is None and self._generate:
            rid = self._new_id()
            headers.append((_REQUEST_ID, rid))
        request.info.request_id = rid
        if self._xff and request.info.downstream_addr:
            ip = request.info.downstream_host.encode()
            if xff_at >= 0:
                headers[xff_at] = (_XFF, headers[xff_at][1] + b", " + ip)
            else:
                headers.append((_XFF, ip))
            if not has_xfp:
                headers.append((_XFP, request.scheme))
        return await next(request)
