"""Semconv HTTP span attributes computed from our Request, and the error/status rules."""

from __future__ import annotations

import functools

from opentelemetry.util.types import AttributeValue

from exporters import names
from proxy.http.model import Request, header_get

KNOWN_METHODS = names.HTTP_METHODS
METHOD_ORIGINAL = "http.request.method_original"


def method_name(method: bytes) -> str:
    """The semconv method: a known one, else `_OTHER`."""
    return KNOWN_METHODS.get(method, "_OTHER")


def span_method(method: bytes) -> str:
    """The span name's method part: `HTTP` stands for unknown methods."""
    return KNOWN_METHODS.get(method, "HTTP")


@functools.lru_cache(maxsize=256)
def split_authority(authority: bytes) -> tuple[str, int | None]:
    """`host[:port]` / `[v6][:port]` → (host, port or None); a proxy sees few distinct ones."""
    text = authority.decode("latin-1")
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    return host, int(port) if port.isdigit() else None


def server_attributes(request: Request) -> dict[str, AttributeValue]:
    """SERVER span attributes known when the request arrives."""
    method = request.method
    target = request.target
    q = target.find(b"?")
    path, query = (target, None) if q < 0 else (target[:q], target[q + 1 :])
    attrs: dict[str, AttributeValue] = {
        names.HTTP_REQUEST_METHOD: method_name(method),
        names.URL_PATH: path.decode("latin-1"),
        names.URL_SCHEME: request.scheme.decode("latin-1"),
        names.NETWORK_PROTOCOL_VERSION: request.http_version,
    }
    if method not in KNOWN_METHODS:
        attrs[METHOD_ORIGINAL] = method.decode("latin-1")
    if query is not None:
        attrs[names.URL_QUERY] = query.decode("latin-1")
    headers = request.headers
    authority = (
        header_get(headers, b"x-forwarded-host")
        or request.authority
        or header_get(headers, b"host")
    )
    if authority:
        host, port = split_authority(authority)
        attrs[names.SERVER_ADDRESS] = host
        if port is None:
            port = 443 if request.scheme == b"https" else 80
        attrs[names.SERVER_PORT] = port
    info = request.info
    if info.downstream_addr:
        attrs[names.CLIENT_ADDRESS] = info.client_host
    agent = header_get(headers, b"user-agent")
    if agent is not None:
        attrs[names.USER_AGENT] = agent.decode("latin-1")
    if info.request_id is not None:
        attrs[names.REQUEST_ID] = info.request_id.decode("latin-1")
    return attrs
