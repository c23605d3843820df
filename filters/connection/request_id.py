"""Connection-manager duties before any filter: hop-by-hop fields, x-request-id, x-forwarded-*."""

from __future__ import annotations

import random
from typing import NoReturn

from proxy.chain import Handler
from proxy.http.errors import BadRequest
from proxy.http.hop_by_hop import HOP_BY_HOP, nominated, strip_hop_by_hop
from proxy.http.model import Headers, Request, Response

_REQUEST_ID = b"x-request-id"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"
_HOST = b"host"
# One set test per header on the hot path; the names below are told apart only on a hit.
_WATCHED = HOP_BY_HOP | {_REQUEST_ID, _XFF, _XFP}

# Fields a client may not make hop-by-hop: RFC 9110 §7.6.1 forbids nominating fields meant for
# all recipients, and Envoy answers 400 to a nominated x-forwarded-* (removing one would mask
# where the request came from). A nominated x-request-id is honoured: it is removed, and the id
# the proxy generates is added after, so the one it logs is the one it forwards.
_NOT_NOMINABLE = frozenset(
    {_HOST, _XFF, _XFP, b"x-forwarded-host", b"x-forwarded-port", b"forwarded"}
)


class ConnectionManagerFilter:
    """As Envoy's HCM: ends hop-by-hop fields, then gives each request an id and records the
    client in x-forwarded-for/-proto, so a client's Connection header cannot remove them."""

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
        stripped = False
        while True:  # one pass; a second over what is left once hop-by-hop fields are gone
            rid: bytes | None = None
            xff_at = -1
            has_xfp = False
            for i, (name, value) in enumerate(headers):
                if name in _WATCHED:
                    if name == _REQUEST_ID:
                        rid = value
                    elif name == _XFF:
                        xff_at = i
                    elif name == _XFP:
                        has_xfp = True
                    elif not stripped:  # hop-by-hop: they go before the proxy adds its own
                        headers = request.headers = await _end_hop_by_hop(request)
                        stripped = True
                        break
            else:
                break
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


async def _end_hop_by_hop(request: Request) -> Headers:
    """The request's headers minus hop-by-hop fields; 400 if Connection names a protected one."""
    named = nominated(request.headers)
    if not named.isdisjoint(_NOT_NOMINABLE):
        bad = b", ".join(sorted(named & _NOT_NOMINABLE)).decode("latin-1")
        await _reject(request, f"Connection may not nominate {bad}")
    return strip_hop_by_hop(request.headers, named)


async def _reject(request: Request, why: str) -> NoReturn:
    await request.body.aclose()
    raise BadRequest(why)
