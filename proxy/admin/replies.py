"""Admin replies both admin handlers write alike: text, JSON, the stats listing, /clusters."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from proxy.http.model import BytesBody, Response

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


def reply(status: int, body: bytes, content_type: bytes) -> Response:
    return Response(
        status,
        [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        BytesBody(body),
    )


def json_reply(status: int, value: object) -> Response:
    return reply(status, json.dumps(value, indent=2).encode() + b"\n", JSON)


def text_reply(status: int, text: str) -> Response:
    return reply(status, text.encode(), TEXT)


def stats_reply(items: Iterable[tuple[str, int]], params: dict[str, list[str]]) -> Response:
    """/stats as text (`name: value` lines) or ?format=json, narrowed by ?filter=REGEX and
    ?usedonly (non-zero values only)."""
    fmt = params.get("format", ["text"])[0]
    pattern = params.get("filter", [None])[0]
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as exc:
        return text_reply(400, f"bad filter regex: {exc}\n")
    used_only = "usedonly" in params
    shown = [
        (n, v)
        for n, v in sorted(items)
        if (regex is None or regex.search(n)) and (not used_only or v)
    ]
    if fmt == "json":
        return json_reply(200, {"stats": [{"name": n, "value": v} for n, v in shown]})
    return text_reply(200, "".join(f"{n}: {v}\n" for n, v in shown))


def clusters_reply(snapshot: list[dict[str, object]], params: dict[str, list[str]]) -> Response:
    """/clusters: `cluster::host::key::value` lines, or ?format=json."""
    if params.get("format", [""])[0] == "json":
        return json_reply(200, {"cluster_statuses": snapshot})
    lines: list[str] = []
    for cluster in snapshot:
        name = cluster.get("name")
        hosts = cluster.get("hosts", [])
        assert isinstance(hosts, list)
        for host in hosts:
            address = host.get("address")
            for key, value in host.items():
                if key != "address":
                    lines.append(f"{name}::{address}::{key}::{value}\n")
    return text_reply(200, "".join(lines))
