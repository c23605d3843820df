"""Delivery to an HTTP app: POST the CloudEvent (or a bulk batch), read the answer as daprd."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import trio

from filters.dapr.bodies import read_body
from filters.pubsub.delivery import BulkEntry, Delivery, DeliveryFailed, Outcome
from filters.pubsub.envelope import CLOUDEVENTS_JSON
from filters.pubsub.subscriptions import TopicSubscription
from proxy.http.errors import ProxyError
from proxy.http.model import BytesBody, Headers, Request, Response

__all__ = ["HttpAppChannel", "outcome_of_http", "statuses_of_http"]

log = logging.getLogger("meshwire.pubsub")

MAX_REPLY = 4 << 20  # bytes of the app's reply read to find its status


class HttpAppChannel:
    """POST the CloudEvent to the route, read the app's answer as daprd does."""

    def __init__(
        self,
        send: Callable[[Request], Awaitable[Response]],
        authority: bytes,
        app_token: str | None,
        slots: trio.Semaphore | None,
    ) -> None:
        self._send = send
        self._authority = authority
        self._token = app_token
        self._slots = slots

    async def deliver(self, delivery: Delivery) -> Outcome:
        status, body = await self.post(
            delivery.path, delivery.data, CLOUDEVENTS_JSON, delivery.headers
        )
        return outcome_of_http(status, body)

    async def deliver_bulk(
        self, path: str, subscription: TopicSubscription, entries: Sequence[BulkEntry]
    ) -> Mapping[str, Outcome]:
        """One POST of every entry (application/json), each answered in `statuses`."""
        body = {
            "id": str(uuid.uuid4()),
            "type": "com.dapr.event.sent.bulk",
            "topic": subscription.topic,
            "pubsubname": subscription.pubsub,
            "metadata": {},
            "entries": [
                {
                    "entryId": entry.entry_id,
                    "event": entry.event,
                    "contentType": CLOUDEVENTS_JSON,
                    "metadata": dict(entry.metadata),
                }
                for entry in entries
            ],
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        status, reply = await self.post(path, data, "application/json", [])
        return statuses_of_http(status, reply, [entry.entry_id for entry in entries])

    async def post(
        self, path: str, data: bytes, content_type: str, extra: Headers
    ) -> tuple[int, bytes]:
        """POST `data` to the app's `path`: its status and (bounded) body; DeliveryFailed when
        the app cannot be reached."""
        path = path if path.startswith("/") else "/" + path
        headers: Headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(data)).encode()),
            *extra,
        ]
        if self._token is not None:
            headers.append((b"dapr-api-token", self._token.encode()))
        request = Request(
            b"POST", path.encode("utf-8"), headers, BytesBody(data), authority=self._authority
        )
        if self._slots is not None:
            async with self._slots:
                return await self._exchange(request)
        return await self._exchange(request)

    async def _exchange(self, request: Request) -> tuple[int, bytes]:
        try:
            response = await self._send(request)
            body = await read_body(response.body, MAX_REPLY)
        except ProxyError as exc:
            raise DeliveryFailed(f"error from app channel: {exc.message}") from exc
        return response.status, body


def outcome_of_http(status: int, body: bytes) -> Outcome:
    """Dapr's reading of an app's HTTP answer to a delivery."""
    if status == 404:
        log.error("non-retriable error returned from app while processing pub/sub event: 404")
        return Outcome.DROP
    if not 200 <= status < 300:
        raise DeliveryFailed(f"retriable error returned from app: status {status}", status)
    try:
        reply = json.loads(body) if body.strip() else None
    except ValueError:
        return Outcome.SUCCESS  # a non-JSON 2xx is a success
    if not isinstance(reply, dict) or not reply.get("status"):
        return Outcome.SUCCESS
    text = str(reply["status"]).upper()
    if text == "SUCCESS":
        return Outcome.SUCCESS
    if text == "DROP":
        log.warning("the app asked to drop a pub/sub event")
        return Outcome.DROP
    if text != "RETRY":
        log.warning("unknown status %r from the app: retrying", reply["status"])
    return Outcome.RETRY


def statuses_of_http(status: int, body: bytes, entry_ids: Sequence[str]) -> dict[str, Outcome]:
    """daprd's reading of a bulk answer: 404 drops all, another non-2xx retries all; in a 2xx,
    each entry's status, RETRY for an entry missing or without one."""
    if status == 404:
        return dict.fromkeys(entry_ids, Outcome.DROP)
    if not 200 <= status < 300:
        return dict.fromkeys(entry_ids, Outcome.RETRY)
    outcomes = dict.fromkeys(entry_ids, Outcome.RETRY)
    try:
        reply = json.loads(body) if body.strip() else {}
    except ValueError:
        return outcomes
    statuses = reply.get("statuses") if isinstance(reply, dict) else None
    for item in statuses if isinstance(statuses, list) else []:
        if not isinstance(item, dict) or item.get("entryId") not in outcomes:
            continue
        text = str(item.get("status") or "").upper()
        if text == "SUCCESS":
            outcomes[item["entryId"]] = Outcome.SUCCESS
        elif text == "DROP":
            outcomes[item["entryId"]] = Outcome.DROP
    return outcomes
