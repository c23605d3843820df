"""Request-target forms: an absolute-form target becomes origin-form plus its authority."""

from __future__ import annotations

from proxy.http.model import Headers

_SCHEMES = (b"http", b"https")


def split_absolute(target: bytes) -> tuple[bytes, bytes] | None:
    """(origin-form target, authority) for an http(s) absolute-form target; None otherwise."""
    sep = target.find(b"://")
    if sep < 0 or target[:sep].lower() not in _SCHEMES:
        return None
    rest = target[sep + 3 :]
    fragment = rest.find(b"#")
    if fragment >= 0:
        rest = rest[:fragment]
    end = len(rest)
    for delimiter in (b"/", b"?"):
        i = rest.find(delimiter, 0, end)
        if i >= 0:
            end = i
    # RFC 9112 §3.2: Host is the target's authority "excluding any userinfo subcomponent".
    authority = rest[:end].rpartition(b"@")[2]
    if not authority:
        return None
    path = rest[end:]
    # RFC 9112 §3.2.1: an empty path is sent as "/" (also before a query).
    return (path if path[:1] == b"/" else b"/" + path), authority


def to_origin_form(target: bytes, headers: Headers) -> tuple[bytes, bytes] | None:
    """Rewrite an absolute-form request in place of its Host; (target, authority) if it was one.

    RFC 9112 §3.2.2: a proxy receiving the absolute-form "MUST ignore the received Host header
    field (if any) and instead replace it with the host information of the request-target".
    """
    split = split_absolute(target)
    if split is None:
        return None
    authority = split[1]
    replaced = False
    for i, (name, _) in enumerate(headers):
        if name == b"host":
            headers[i] = (b"host", authority)
            replaced = True
    if not replaced:
        headers.append((b"host", authority))
    return split
