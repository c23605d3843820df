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


def nominated(headers: Headers, start: int = 0) -> set[bytes]:
    """The connection options of the Connection field lines from `start` on, lower-cased
    (RFC 9110 §7.6.1)."""
    named: set[bytes] = set()
    for i in range(start, len(headers)):
        name, value = headers[i]
        if name == b"connection":
            for option in value.split(b","):
                named.add(option.strip().lower())
    named.discard(b"")
    return named


def strip_hop_by_hop(headers: Headers, named: set[bytes] | None = None) -> Headers:
    """Headers minus hop-by-hop ones and those Connection names (`named`, when already known).

    Keeps `te: trailers` even when Connection names TE, as RFC 9110 §10.1.4 tells senders to.
    """
    if named is None:
        for name, _ in headers:
            if name in HOP_BY_HOP:
                break
        else:
            return headers
        named = nominated(headers)
    kept: Headers = []
    for h in headers:
        name = h[0]
        if name in HOP_BY_HOP or name in named:
            if name == b"te" and b"trailers" in h[1].lower():
                kept.append((b"te", b"trailers"))
            continue
        kept.append(h)
    return kept
