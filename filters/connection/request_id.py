"""Connection-manager duties before any filter: Host, hop-by-hop, x-request-id, x-forwarded-*."""

from __future__ import annotations

import ipaddress
import random
from typing import NoReturn

from proxy.chain import Handler
from proxy.http.errors import BadRequest
from proxy.http.hop_by_hop import HOP_BY_HOP, nominated, strip_hop_by_hop
from proxy.http.host import valid_host
from proxy.http.model import Headers, Request, Response

_REQUEST_ID = b"x-request-id"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"
_HOST = b"host"
# One set test per header on the hot path; the names below are told apart only on a hit.
_WATCHED = HOP_BY_HOP | {_REQUEST_ID, _XFF, _XFP}
_KNOWN_HOSTS = 256  # valid authorities (of DNS length) a listener remembers, to skip the regex

# Fields a client may not make hop-by-hop: RFC 9110 §7.6.1 forbids nominating fields meant for
# all recipients, and Envoy answers 400 to a nominated x-forwarded-* (removing one would mask
# where the request came from). A nominated x-request-id is honoured: it is removed, and the id
# the proxy generates is added after, so the one it logs is the one it forwards.
_NOT_NOMINABLE = frozenset(
    {_HOST, _XFF, _XFP, b"x-forwarded-host", b"x-forwarded-port", b"forwarded"}
)


def _nth_from_right(value: bytes, n: int) -> str | None:
    """The nth (1-based) address from the right of an X-Forwarded-For list, if a valid IP."""
    parts = value.rsplit(b",", n)
    if len(parts) < n:
        return None
    try:
        return str(ipaddress.ip_address(parts[-n].strip().decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        return None


class ConnectionManagerFilter:
    """As Envoy's HCM: validates Host, ends hop-by-hop fields, then sets the proxy's own headers.

    `use_remote_address` true (an edge): the peer's address is appended to x-forwarded-for and
    x-forwarded-proto is set from the downstream connection, overwriting the client's unless
    `xff_num_trusted_hops` > 0 (then a trusted proxy's value is kept); the trusted client address
    is the peer, or with N trusted hops the Nth address from the right of x-forwarded-for.
    False (behind a trusted proxy, or a sidecar): both headers pass as received and the trusted
    client address is the (N+1)th from the right of x-forwarded-for. Either way it falls back to
    the peer when the list is shorter or that entry is no IP address.
    """

    def __init__(
        self,
        *,
        generate_request_id: bool,
        use_remote_address: bool,
        xff_num_trusted_hops: int = 0,
    ) -> None:
        self._generate = generate_request_id
        self._xff = use_remote_address
        self._hops = xff_num_trusted_hops
        # The entry of x-forwarded-for that holds the trusted client address (0: the peer).
        self._client_at = xff_num_trusted_hops + (0 if use_remote_address else 1)
        self._random = random.Random()
        self._valid_hosts: set[bytes] = set()

    def _new_id(self) -> bytes:
        # A UUIDv4-shaped id from a per-filter PRNG: unique enough to correlate, cheap to make.
        n = self._random.getrandbits(128)
        h = f"{n:032x}"
        variant = "89ab"[n & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}".encode()

    async def __call__(self, request: Request, next: Handler, /) -> Response:
        # RFC 9112 §3.2: a server MUST answer 400 to a request with an invalid Host. The codecs
        # already refuse a second Host (h11) and a Host that differs from :authority (h2), so
        # request.authority is the one value to check.
        authority = request.authority
        if authority not in self._valid_hosts:
            if not valid_host(authority):
                await _reject(request, "invalid Host / :authority")
            if len(self._valid_hosts) < _KNOWN_HOSTS and len(authority) <= 255:
                self._valid_hosts.add(authority)
        headers = request.headers
        stripped = False
        while True:  # one pass; a second over what is left once hop-by-hop fields are gone
            rid: bytes | None = None
            xff_at = xfp_at = -1
            many = False  # repeated x-forwarded-for or x-forwarded-proto lines: merged below
            for i, (name, value) in enumerate(headers):
                if name in _WATCHED:
                    if name == _REQUEST_ID:
                        rid = value
                    elif name == _XFF:
                        many |= xff_at >= 0
                        xff_at = i
                    elif name == _XFP:
                        many |= xfp_at >= 0
                        xfp_at = i
                    elif not stripped:  # hop-by-hop: they go before the proxy adds its own
                        kept = _without_hop_by_hop(headers, i)
                        if kept is None:
                            bad = b", ".join(sorted(nominated(headers) & _NOT_NOMINABLE))
                            await _reject(request, f"Connection may not nominate {bad.decode()}")
                        headers = request.headers = kept
                        stripped = True
                        break
            else:
                break
        xff = headers[xff_at][1] if xff_at >= 0 else b""
        if many:
            if self._xff:  # an edge rewrites them anyway: one line each, appended to below
                headers, xff_at, xfp_at = _merged(headers)
                request.headers = headers
                xff = headers[xff_at][1] if xff_at >= 0 else b""
            else:
                xff = b", ".join(v for n, v in headers if n == _XFF)
        if rid is None and self._generate:
            rid = self._new_id()
            headers.append((_REQUEST_ID, rid))
        info = request.info
        info.request_id = rid
        if self._client_at and xff:
            info.client_address = _nth_from_right(xff, self._client_at)
        if self._xff:
            if info.downstream_addr:
                ip = info.downstream_host.encode()
                if xff_at >= 0:
                    headers[xff_at] = (_XFF, xff + b", " + ip if xff.strip() else ip)
                else:
                    headers.append((_XFF, ip))
            if xfp_at < 0:
                headers.append((_XFP, request.scheme))
            elif not self._hops:  # the peer is not a trusted proxy: its value is not believed
                headers[xfp_at] = (_XFP, request.scheme)
        return await next(request)


def _without_hop_by_hop(headers: Headers, first: int) -> Headers | None:
    """The headers minus hop-by-hop fields (the first at index `first`, so every Connection line
    is there or after); None when Connection nominates a field that must not be removed."""
    named = nominated(headers, first)
    if not named.isdisjoint(_NOT_NOMINABLE):
        return None
    return strip_hop_by_hop(headers, named)


async def _reject(request: Request, why: str) -> NoReturn:
    await request.body.aclose()
    raise BadRequest(why)


def _merged(headers: Headers) -> tuple[Headers, int, int]:
    """One x-forwarded-for and one x-forwarded-proto line, at their first places (RFC 9110 §5.3
    makes repeated lines one comma-joined list; the last proto wins); their new indexes."""
    out: Headers = []
    xff_at = xfp_at = -1
    for name, value in headers:
        if name == _XFF and xff_at >= 0:
            out[xff_at] = (_XFF, out[xff_at][1] + b", " + value)
        elif name == _XFP and xfp_at >= 0:
            out[xfp_at] = (_XFP, value)
        else:
            if name == _XFF:
                xff_at = len(out)
            elif name == _XFP:
                xfp_at = len(out)
            out.append((name, value))
    return out, xff_at, xfp_at
