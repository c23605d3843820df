"""Dapr's publish HTTP API: /v1.0/publish/{pubsub}/{topic...} and bulk publish."""

from __future__ import annotations

import base64
import json

from opentelemetry.trace import SpanContext, TraceFlags

from filters.dapr.bodies import read_body
from filters.dapr.params import (
    BadJson,
    BadParam,
    is_json_content_type,
    load_json,
    metadata_params,
    path_param,
)
from filters.pubsub.delivery import parse_traceparent
from filters.pubsub.envelope import CLOUDEVENTS_JSON, OCTET_STREAM
from filters.pubsub.publisher import BulkEntry, Publisher
from filters.tracing.state import new_span_id, new_trace_id
from proxy.http.errors import DaprApiError
from proxy.http.model import BytesBody, Request, Response, header_get

PUBLISH_PREFIX = b"/v1.0/publish/"
BULK_PREFIXES = (b"/v1.0-alpha1/publish/bulk/", b"/v1.0/publish/bulk/")
_WRITE = (b"POST", b"PUT")


def handles(path: bytes) -> bool:
    return path.startswith(PUBLISH_PREFIX) or path.startswith(BULK_PREFIXES[0])


def span_context(request: Request) -> SpanContext:
    """The API call's span: the tracing filter's when it traces this listener; otherwise a
    span of the caller's trace (or a new, unsampled one), so the envelope always carries a
    trace context, as daprd's does."""
    trace = request.info.trace
    if trace is not None:
        return trace.span_context
    parent = parse_traceparent(header_get(request.headers, b"traceparent"))
    if parent is None:
        return SpanContext(new_trace_id(), new_span_id(), False, TraceFlags(0))
    return SpanContext(parent.trace_id, new_span_id(), False, parent.trace_flags)


def _split(rest: bytes) -> tuple[str, str]:
    """`{pubsub}/{topic...}`: the topic is everything after the first `/`, slashes included;
    each must be UTF-8 once percent-decoded (a U+FFFD would make two topics one)."""
    name, _, topic = rest.partition(b"/")
    try:
        return path_param(name), path_param(topic)
    except BadParam as exc:
        message = f"invalid pubsub name or topic: {exc}"
        raise DaprApiError("ERR_MALFORMED_REQUEST", message, status=400) from None


class PublishHttpApi:
    def __init__(self, publisher: Publisher, max_body_size: int) -> None:
        self.publisher = publisher
        self.max_body_size = max_body_size

    async def __call__(self, request: Request, path: bytes, query: bytes) -> Response:
        if request.method not in _WRITE:
            return Response.text(405, "method not allowed")
        context = span_context(request)
        for prefix in BULK_PREFIXES:
            if path.startswith(prefix):
                name, topic = _split(path[len(prefix) :])
                return await self._bulk(request, name, topic, query, context)
        name, topic = _split(path[len(PUBLISH_PREFIX) :])
        named = self.publisher.lookup(name, topic)  # errors before the body is read, as daprd
        body = await read_body(request.body, self.max_body_size)
        content_type = header_get(request.headers, b"content-type")
        await self.publisher.publish(
            named,
            topic,
            body,
            content_type.decode("latin-1") if content_type else None,
            metadata_params(query),
            context,
        )
        return Response(204, [])

    async def _bulk(
        self, request: Request, name: str, topic: str, query: bytes, context: SpanContext
    ) -> Response:
        named = self.publisher.lookup(name, topic)
        body = await read_body(request.body, self.max_body_size)
        entries = parse_bulk_entries(body)
        failed = await self.publisher.bulk_publish(
            named, topic, entries, metadata_params(query), context
        )
        if not failed:
            return Response(204, [])
        value = {
            "failedEntries": [{"entryId": e, "error": error} for e, error in failed],
            "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
        }
        data = json.dumps(value, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json")]
        return Response(500, headers, BytesBody(data))


def _events_error(message: str) -> DaprApiError:
    return DaprApiError("ERR_PUBSUB_EVENTS_SER", message, status=400)


def parse_bulk_entries(body: bytes) -> list[BulkEntry]:
    """The JSON array of {entryId, event, contentType, metadata} a bulk publish carries."""
    try:
        raw = load_json(body)
    except BadJson as exc:
        raise _events_error(f"error when unmarshaling the request body: {exc}") from None
    if not isinstance(raw, list):
        raise _events_error("error when unmarshaling the request body: expected a JSON array")
    entries: list[BulkEntry] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise _events_error("error when unmarshaling the request body: entry not an object")
        entry_id = item.get("entryId")
        if not isinstance(entry_id, str) or not entry_id:
            raise _events_error("entryId is duplicated or not present for entry")
        if entry_id in seen:
            raise _events_error(f"entryId is duplicated or not present for entry {entry_id}")
        seen.add(entry_id)
        content_type = str(item.get("contentType") or "")
        metadata = item.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise _events_error(f"metadata of entry {entry_id} is not an object")
        entries.append(
            BulkEntry(
                entry_id,
                _event_bytes(entry_id, item.get("event"), content_type),
                content_type or "application/json",
                {str(k): str(v) for k, v in metadata.items()},
            )
        )
    return entries


def _event_bytes(entry_id: str, event: object, content_type: str) -> bytes:
    """An entry's event as the bytes a single publish would have carried."""
    media = content_type.partition(";")[0].strip().lower()
    if media == OCTET_STREAM:
        if not isinstance(event, str):
            raise _events_error(f"entry {entry_id}: octet-stream event must be a base64 string")
        try:
            return base64.b64decode(event, validate=True)
        except ValueError:
            raise _events_error(f"entry {entry_id}: event is not valid base64") from None
    if media == CLOUDEVENTS_JSON or not media or is_json_content_type(media):
        return json.dumps(event, separators=(",", ":")).encode()
    if not isinstance(event, str):
        raise _events_error(f"entry {entry_id}: a {media} event must be a string")
    return event.encode()
