"""Hop-by-hop header handling (RFC 9110 §7.6.1): what a proxy must not forward."""

from __future__ import annotations

from proxy.http.model import CONNECTION_SPECIFIC, Headers

# Always connection-specific; `te` is handled apart because "te: trailers" must reach gRPC servers.
HOP_BY_HOP = CONNECTION_SPECIFIC | frozenset(
    {
        b"proxy-authenticate",
        b"proxy-authorization",
        b"trailer",
        b"te",
        b"http2-settings",
    }
)


def strip_hop_by_hop(headers: Headers) -> Headers:
    """Headers minus hop-by-hop ones and those Connection names; keeps `te: trailers`."""
    named: set[bytes] | None = None
    dirty = False
    for name, value in headers:
        if name in HOP_BY_HOP:
            dirty = True
            if name == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                named = tokens if named is None else named | tokens
    if not dirty:
        return headers
    kept: Headers = []
    for h in headers:
        name = h[0]
        if named is not None and name in named:
            continue
        if name in HOP_BY_HOP:
            if name == b"te" and b"trailers" in h[1].lower():
                kept.append((b"te", b"trailers"))
            continue
        kept.append(h)
    return kept
