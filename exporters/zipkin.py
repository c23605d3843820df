"""Zipkin JSON v2 export that keeps to the official spec (zipkin2-api.yaml) where the SDK won't."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

# The encoder base of the SDK's Zipkin exporter, not the exporter: opentelemetry.exporter.zipkin.
# json (its package, and that of the SDK's JsonV2Encoder) imports requests, which only the export
# thread needs, once a span is sampled (exporters/zipkin_session.py).
from opentelemetry.exporter.zipkin.encoder import JsonEncoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Span, SpanKind, StatusCode

from exporters import names

# Where each kind's peer is described (semconv): the server for CLIENT, the client for SERVER.
_PEER = {
    SpanKind.CLIENT: (names.SERVER_ADDRESS, names.SERVER_PORT),
    SpanKind.PRODUCER: (names.SERVER_ADDRESS, names.SERVER_PORT),
    SpanKind.SERVER: (names.CLIENT_ADDRESS, "client.port"),
}


_KINDS = {
    SpanKind.SERVER: "SERVER",
    SpanKind.CLIENT: "CLIENT",
    SpanKind.PRODUCER: "PRODUCER",
    SpanKind.CONSUMER: "CONSUMER",
}
_JSON = msgspec.json.Encoder()


class SpecJsonV2Encoder(JsonEncoder):
    """The SDK's v2 encoder (JsonV2Encoder, whose every span this one encodes itself), made
    faster and corrected:

    - INTERNAL spans omit `kind` (the SDK writes `"kind": null`, which the spec's enum rejects);
    - `duration` is at least 1 µs (the spec's minimum; the SDK rounds sub-µs spans to 0);
    - no `debug` flag (the SDK sets it on every sampled span; in Zipkin it means force-trace);
    - tags are strings only (the SDK can write a null scope version);
    - `remoteEndpoint` from `peer.service` / server.address / client.address, so Zipkin draws
      the dependency between services.

    Encoding runs on the export thread, which shares the GIL with the event loop: the tags a
    batch's spans share (resource and scope) are rendered once, and msgspec writes the JSON.
    """

    def __init__(self, max_tag_value_length: int | None = None) -> None:
        """`max_tag_value_length`: None (the SDK exporter's default) truncates no tag."""
        super().__init__(max_tag_value_length)  # type: ignore[arg-type]
        self._shared: tuple[object, object, dict[str, str]] | None = None

    def local_endpoint(self, service_name: str) -> dict[str, Any]:
        """The `localEndpoint` object every span of this process carries."""
        node = NodeEndpoint()
        node.service_name = service_name
        encoded: dict[str, Any] = self._encode_local_endpoint(node)
        return encoded

    def encode_span(self, span: ReadableSpan, local_endpoint: dict[str, Any]) -> bytes:
        """One span as a JSON object, to be joined into a batch's array."""
        return _JSON.encode(self._encode_span(span, local_endpoint))  # type: ignore[arg-type]

    def serialize(self, spans: Sequence[Span], local_endpoint: NodeEndpoint) -> str:
        endpoint = self._encode_local_endpoint(local_endpoint)
        encoded = [self._encode_span(span, endpoint) for span in spans]
        return _JSON.encode(encoded).decode()

    def _shared_tags(self, span: ReadableSpan) -> dict[str, str]:
        """Resource and instrumentation-scope tags, cached for the batch's provider and scope."""
        resource, scope = span.resource, span.instrumentation_scope
        cached = self._shared
        if cached is not None and cached[0] is resource and cached[1] is scope:
            return cached[2]
        tags = self._extract_tags_from_dict(dict(resource.attributes) if resource else None)
        if scope is not None:
            for key in ("otel.library.name", "otel.scope.name"):
                tags[key] = scope.name
            if scope.version:
                for key in ("otel.library.version", "otel.scope.version"):
                    tags[key] = scope.version
        self._shared = (resource, scope, tags)
        return tags

    def _encode_span(self, span: Span, encoded_local_endpoint: Any) -> dict[str, Any]:
        readable: ReadableSpan = span  # type: ignore[assignment]
        context = readable.context
        assert context is not None  # ended SDK spans always have both
        assert readable.start_time is not None
        start = readable.start_time
        end = readable.end_time if readable.end_time is not None else start
        encoded: dict[str, Any] = {
            "traceId": f"{context.trace_id:032x}",
            "id": f"{context.span_id:016x}",
            "name": readable.name,
            "timestamp": (start + 500) // 1000,
            "duration": max(1, (end - start + 500) // 1000),
            "localEndpoint": encoded_local_endpoint,
        }
        kind = _KINDS.get(readable.kind)
        if kind is not None:
            encoded["kind"] = kind
        parent = readable.parent
        if parent is not None:
            encoded["parentId"] = f"{parent.span_id:016x}"
        tags = self._tags(readable.attributes)
        tags.update(self._shared_tags(readable))
        status = readable.status.status_code
        if status is not StatusCode.UNSET:
            tags["otel.status_code"] = status.name
            if status is StatusCode.ERROR:
                tags["error"] = readable.status.description or ""
        for key, count in (
            ("otel.dropped_attributes_count", readable.dropped_attributes),
            ("otel.dropped_events_count", readable.dropped_events),
            ("otel.dropped_links_count", readable.dropped_links),
        ):
            if count:
                tags[key] = str(count)
        encoded["tags"] = tags
        if readable.events:
            encoded["annotations"] = self._extract_annotations_from_events(list(readable.events))
        remote = remote_endpoint(span)
        if remote:
            encoded["remoteEndpoint"] = remote
        return encoded

    def _tags(self, attributes: Mapping[str, Any] | None) -> dict[str, str]:
        """Span attributes as string tags: str and int (all the data plane writes) directly."""
        if not attributes:
            return {}
        limit = self.max_tag_value_length
        tags: dict[str, str] = {}
        slow: dict[str, Any] = {}
        for key, value in attributes.items():
            kind = type(value)
            if kind is str:
                tags[key] = value if not limit or len(value) <= limit else value[:limit]
            elif kind is int:
                tags[key] = str(value)
            else:
                slow[key] = value
        if slow:
            tags.update(self._extract_tags_from_dict(slow))
        return tags


def remote_endpoint(span: Span) -> dict[str, Any]:
    """The peer of a CLIENT, PRODUCER or SERVER span as a Zipkin Endpoint ({} if unknown)."""
    keys = _PEER.get(span.kind)  # type: ignore[attr-defined]
    if keys is None:
        return {}
    attributes = getattr(span, "attributes", None) or {}
    return _endpoint(
        attributes.get("peer.service"), attributes.get(keys[0]), attributes.get(keys[1])
    )


@functools.lru_cache(maxsize=1024)
def _endpoint(service: object, address: object, port: object) -> dict[str, Any]:
    """Shared between spans (a proxy talks to few peers): callers must not change it."""
    endpoint: dict[str, Any] = {}
    if isinstance(service, str) and service:
        endpoint["serviceName"] = service.lower()
    if isinstance(address, str) and address:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            endpoint.setdefault("serviceName", address.lower())
        else:
            endpoint["ipv4" if ip.version == 4 else "ipv6"] = str(ip)
    if endpoint and isinstance(port, int) and 0 < port < 65536:
        endpoint["port"] = port
    return endpoint
