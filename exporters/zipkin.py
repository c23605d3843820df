"""Zipkin JSON v2 export that keeps to the official spec (zipkin2-api.yaml) where the SDK won't."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Span, SpanKind

from config import schema
from exporters import names

# Where each kind's peer is described (semconv): the server for CLIENT, the client for SERVER.
_PEER = {
    SpanKind.CLIENT: (names.SERVER_ADDRESS, names.SERVER_PORT),
    SpanKind.PRODUCER: (names.SERVER_ADDRESS, names.SERVER_PORT),
    SpanKind.SERVER: (names.CLIENT_ADDRESS, "client.port"),
}


class SpecJsonV2Encoder(JsonV2Encoder):
    """The SDK's v2 encoder, corrected:

    - INTERNAL spans omit `kind` (the SDK writes `"kind": null`, which the spec's enum rejects);
    - `duration` is at least 1 µs (the spec's minimum; the SDK rounds sub-µs spans to 0);
    - no `debug` flag (the SDK sets it on every sampled span; in Zipkin it means force-trace);
    - `remoteEndpoint` from `peer.service` / server.address / client.address, so Zipkin draws
      the dependency between services.
    """

    def _encode_span(self, span: Span, encoded_local_endpoint: Any) -> dict[str, Any]:
        encoded: dict[str, Any] = super()._encode_span(span, encoded_local_endpoint)
        if encoded.get("kind") is None:
            encoded.pop("kind", None)
        encoded.pop("debug", None)
        encoded["duration"] = max(1, encoded["duration"])
        remote = remote_endpoint(span)
        if remote:
            encoded["remoteEndpoint"] = remote
        return encoded


def remote_endpoint(span: Span) -> dict[str, Any]:
    """The peer of a CLIENT, PRODUCER or SERVER span as a Zipkin Endpoint ({} if unknown)."""
    keys = _PEER.get(span.kind)  # type: ignore[attr-defined]
    attributes = getattr(span, "attributes", None) or {}
    if keys is None:
        return {}
    endpoint: dict[str, Any] = {}
    service = attributes.get("peer.service")
    if isinstance(service, str) and service:
        endpoint["serviceName"] = service.lower()
    address = attributes.get(keys[0])
    if isinstance(address, str) and address:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            endpoint.setdefault("serviceName", address.lower())
        else:
            endpoint["ipv4" if ip.version == 4 else "ipv6"] = str(ip)
    port = attributes.get(keys[1])
    if endpoint and isinstance(port, int) and 0 < port < 65536:
        endpoint["port"] = port
    return endpoint


def zipkin_exporter(config: schema.ZipkinExporter) -> SpanExporter:
    """The SDK's Zipkin JSON exporter (blocking `requests`, fine on the batch thread)."""
    exporter = ZipkinExporter(
        endpoint=config.endpoint,
        timeout=max(1, math.ceil(config.timeout)),  # whole seconds
    )
    limit = exporter.encoder.max_tag_value_length
    exporter.encoder = SpecJsonV2Encoder(limit)  # type: ignore[assignment]
    result: SpanExporter = exporter
    return result
