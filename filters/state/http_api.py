"""Dapr's state HTTP API: /v1.0/state/{store}[/{key}|/bulk|/transaction], /v1.0-alpha1/…/query."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from urllib.parse import parse_qs

from filters.dapr.bodies import read_body
from filters.dapr.params import (
    BadJson,
    BadParam,
    is_json_content_type,
    load_json,
    metadata_params,
    path_param,
)
from filters.state import api_errors as errors
from filters.state.observe import Observer
from filters.state.query import NOT_JSON, QueryError, decode_json, parse_query
from filters.state.registry import StateStores
from filters.state.service import (
    TTL_EXPIRE_TIME,
    StateService,
    concurrency,
    expire_time,
    set_request,
)
from filters.state.store import DeleteRequest, SetRequest
from filters.tracing.state import RequestTrace
from proxy.http.model import BytesBody, Headers, Request, Response, header_get

STATE_PREFIX = b"/v1.0/state/"
QUERY_PREFIX = b"/v1.0-alpha1/state/"
_WRITE = (b"POST", b"PUT")
_JSON = b"application/json"


def handles(path: bytes) -> bool:
    return path.startswith(STATE_PREFIX) or path.startswith(QUERY_PREFIX)


class StateHttpApi:
    """The routes of the state building block, as daprd's router matches them (path
    parameters are unescaped after matching, so a key holding `/` must be sent as %2F)."""

    def __init__(self, stores: StateStores, observer: Observer, max_body_size: int) -> None:
        self.service = StateService(stores, observer)
        self.max_body_size = max_body_size

    async def __call__(self, request: Request, path: bytes, query: bytes) -> Response:
        """Serve `path` (already cleaned) with its raw `query`; errors raise StateApiError."""
        method = request.method
        if path.startswith(QUERY_PREFIX):
            parts = path[len(QUERY_PREFIX) :].split(b"/")
            if len(parts) == 2 and parts[1] == b"query" and parts[0]:
                if method not in _WRITE:
                    return _status(405)
                return await self._query(request, _param(parts[0]))
            return _status(404)
        parts = path[len(STATE_PREFIX) :].split(b"/")
        if not parts[0] or len(parts) > 2:
            return _status(404)
        store = _param(parts[0])
        params = metadata_params(query)
        if len(parts) == 1:
            if method not in _WRITE:
                return _status(405)
            return await self._save(request, store, params)
        if method in _WRITE and parts[1] == b"bulk":
            return await self._bulk_get(request, store, params)
        if method in _WRITE and parts[1] == b"transaction":
            return await self._transaction(request, store, params)
        key = _param(parts[1])
        if method == b"GET":
            return await self._get(request, store, key)
        if method == b"DELETE":
            return await self._delete(request, store, key, query)
        return _status(405)

    async def _body(self, request: Request) -> object:
        data = await read_body(request.body, self.max_body_size)
        try:
            return load_json(data) if data.strip() else None
        except BadJson as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None

    async def _save(self, request: Request, store: str, params: dict[str, str]) -> Response:
        named = self.service.store(store)
        body = await self._body(request)
        if not isinstance(body, list):
            raise errors.malformed("failed deserializing HTTP body: expected a JSON array")
        items = [_set_request(raw, params) for raw in body]
        await self.service.save(named, items, _trace(request))
        return _status(204)

    async def _get(self, request: Request, store: str, key: str) -> Response:
        named = self.service.store(store)
        await request.body.aclose()
        item = await self.service.get(named, key, _trace(request))
        if item is None:
            return _status(204)
        content_type = content_type_header(item.content_type)
        headers: Headers = [(b"content-type", content_type), (b"etag", item.etag.encode())]
        expires = expire_time(item)
        if expires is not None:
            headers.append((f"metadata.{TTL_EXPIRE_TIME}".encode(), expires.encode()))
        headers.append((b"content-length", str(len(item.value)).encode()))
        return Response(200, headers, BytesBody(item.value))

    async def _bulk_get(self, request: Request, store: str, params: dict[str, str]) -> Response:
        named = self.service.store(store)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise errors.malformed("failed deserializing HTTP body: expected a JSON object")
        keys = body.get("keys") or []
        parallelism = body.get("parallelism") or 0
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise errors.malformed('failed deserializing HTTP body: "keys" must be strings')
        if not isinstance(parallelism, int) or isinstance(parallelism, bool):
            raise errors.malformed('failed deserializing HTTP body: "parallelism" is a number')
        found = await self.service.bulk_get(named, keys, parallelism, _trace(request))
        entries: list[str] = []
        for key, item in zip(keys, found, strict=True):
            fields = [f'"key":{_dumps(key)}']
            if isinstance(item, str):
                fields.append(f'"error":{_dumps(item)}')
            elif item is not None:
                fields += [f'"data":{data_json(item.value)}', f'"etag":{_dumps(item.etag)}']
                expires = expire_time(item)
                if expires is not None:
                    fields.append(f'"metadata":{_dumps({TTL_EXPIRE_TIME: expires})}')
            entries.append("{" + ",".join(fields) + "}")
        return _json(200, "[" + ",".join(entries) + "]")

    async def _delete(self, request: Request, store: str, key: str, query: bytes) -> Response:
        named = self.service.store(store)
        await request.body.aclose()
        # An If-Match header makes the delete conditional even when it is empty.
        etag = header_get(request.headers, b"if-match")
        mode = parse_qs(query.decode("latin-1")).get("concurrency", [""])[0]
        delete = DeleteRequest(
            key, etag.decode("latin-1") if etag is not None else None, concurrency(mode)
        )
        await self.service.delete(named, [delete], _trace(request))
        return _status(204)

    async def _transaction(self, request: Request, store: str, params: dict[str, str]) -> Response:
        named = self.service.store(store)
        self.service.require_transactions(named)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise errors.malformed("failed deserializing HTTP body: expected a JSON object")
        operations = body.get("operations") or []
        if not isinstance(operations, list):
            raise errors.malformed('failed deserializing HTTP body: "operations" is an array')
        shared = {**_string_map(body.get("metadata")), **params}
        requests: list[SetRequest | DeleteRequest] = []
        for op in operations:
            if not isinstance(op, dict):
                raise errors.malformed("failed deserializing HTTP body: an operation is an object")
            kind = op.get("operation")
            if kind == "upsert":
                requests.append(_set_request(op.get("request"), shared))
            elif kind == "delete":
                requests.append(_delete_request(op.get("request")))
            else:
                raise errors.unsupported_operation(str(kind))
        await self.service.transact(named, requests, _trace(request))
        return _status(204)

    async def _query(self, request: Request, store: str) -> Response:
        named = self.service.store(store)
        data = await read_body(request.body, self.max_body_size)
        try:
            query = parse_query(data)
        except QueryError as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None
        result = await self.service.query(named, query, _trace(request))
        if not result.items:
            return _status(204)
        results = ",".join(
            f'{{"key":{_dumps(i.key)},"data":{data_json(i.value)},"etag":{_dumps(i.etag)}}}'
            for i in result.items
        )
        token = f',"token":{_dumps(result.token)}' if result.token else ""
        return _json(200, f'{{"results":[{results}]{token}}}')


def data_json(value: bytes) -> str:
    """A stored value inside a JSON answer: JSON text as it is; other text as a JSON string;
    other bytes as a base64 string."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return _dumps(base64.b64encode(value).decode("ascii"))
    # Strict: a value saved over gRPC may be NaN or nested past any parser's patience.
    if decode_json(value) is NOT_JSON:
        return _dumps(text)
    return text


def content_type_header(content_type: str | None) -> bytes:
    """A stored content type as the GET answer's header (validated at save; an older row
    holding what a header cannot carry falls back to JSON's)."""
    if not content_type or not content_type.isprintable():
        return _JSON
    return content_type.encode("utf-8")


def encode_value(value: object, content_type: str | None) -> bytes:
    """What a JSON item's value is stored as: its JSON text (a string keeps its quotes), unless
    a non-JSON contentType is given for a string, which is then stored as its UTF-8 bytes."""
    if isinstance(value, str) and content_type and not is_json_content_type(content_type):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _set_request(raw: object, params: Mapping[str, str]) -> SetRequest:
    if not isinstance(raw, dict):
        raise errors.malformed("failed deserializing HTTP body: a state item is an object")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise errors.malformed('"key" is a required field')
    metadata = {**_string_map(raw.get("metadata")), **params}
    options = raw.get("options")
    mode = options.get("concurrency") if isinstance(options, dict) else None
    value = encode_value(raw.get("value"), metadata.get("contentType"))
    return set_request(key, value, _etag(raw), concurrency(str(mode or "")), metadata)


def _delete_request(raw: object) -> DeleteRequest:
    if not isinstance(raw, dict):
        raise errors.malformed("failed deserializing HTTP body: a state item is an object")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise errors.malformed('"key" is a required field')
    options = raw.get("options")
    mode = options.get("concurrency") if isinstance(options, dict) else None
    return DeleteRequest(key, _etag(raw), concurrency(str(mode or "")))


def _etag(raw: Mapping[str, object]) -> str | None:
    etag = raw.get("etag")
    if etag is None or isinstance(etag, str):
        return etag
    raise errors.malformed('failed deserializing HTTP body: "etag" must be a string')


def _string_map(raw: object) -> dict[str, str]:
    """Dapr's metadata map[string]string; scalars are taken as their text."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise errors.malformed('failed deserializing HTTP body: "metadata" is an object')
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def _param(raw: bytes) -> str:
    try:
        return path_param(raw)
    except BadParam as exc:
        raise errors.malformed(f"invalid path parameter: {exc}") from None


def _trace(request: Request) -> RequestTrace | None:
    return request.info.trace


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json(status: int, text: str) -> Response:
    body = text.encode("utf-8")
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    return Response(status, headers, BytesBody(body))


def _status(status: int) -> Response:
    if status == 204:
        return Response(204, [])
    text = "404 page not found\n" if status == 404 else ""
    return Response.text(status, text)
