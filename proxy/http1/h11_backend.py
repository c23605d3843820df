"""The reference parser backend: h11, one h11.Connection per message."""

from __future__ import annotations

from collections import deque

import h11

from proxy.http.model import Headers
from proxy.http1.events import Data, EndOfMessage, Event, ProtocolError


def strict_head(head: bytes) -> None:
    """What llhttp refuses and h11 lets through, refused here too so the codecs agree: bare
    CR or LF line ends, obs-fold (RFC 9112 §5.2), DEL, and a repeated or listed Content-Length
    (RFC 9110 §8.6 allows merging "1, 1"; a proxy that merges disagrees with one that refuses)."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise ProtocolError("a line ends in a bare CR or LF")
    if b"\n " in head or b"\n\t" in head:
        raise ProtocolError("obsolete line folding")
    if b"\x7f" in head:
        raise ProtocolError("DEL in the head")
    lowered = head.lower()
    at = lowered.find(b"\ncontent-length:")
    if at >= 0:
        if lowered.find(b"\ncontent-length:", at + 1) >= 0:
            raise ProtocolError("repeated Content-Length")
        if b"," in lowered[at : lowered.find(b"\r\n", at + 1)]:
            raise ProtocolError("a list in Content-Length")


def _fields(event: h11.Request | h11.Response | h11.InformationalResponse) -> Headers:
    return [(bytes(name), bytes(value)) for name, value in event.headers]


def _chunked(conn: h11.Connection, piece: bytes, out: deque[Event]) -> bool:
    conn.receive_data(piece)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        if type(event) is h11.Data:
            if event.data:
                out.append(Data(bytes(event.data), event.chunk_start))
        elif type(event) is h11.EndOfMessage:
            out.append(EndOfMessage(_fields(event) or None))  # type: ignore[arg-type]
            return True
        elif event is h11.NEED_DATA:
            return False
        else:
            raise ProtocolError(f"unexpected {event!r} in a chunked body")


class H11Requests:
    """Parses requests with h11 as a server would."""

    __slots__ = ("_conn", "_limit")

    def __init__(self, max_head: int) -> None:
        self._limit = max_head + 1  # the shared parser enforces the real limits
        self._conn = h11.Connection(h11.SERVER)

    def head(self, head: bytes, method: bytes) -> Headers:
        strict_head(head)
        conn = self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limit)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        if type(event) is not h11.Request:
            raise ProtocolError(f"expected a request, got {event!r}")
        return _fields(event)

    def chunked(self, piece: bytes, out: deque[Event]) -> bool:
        return _chunked(self._conn, piece, out)


class H11Responses:
    """Parses the response to one request with h11 as a client would."""

    __slots__ = ("_conn",)

    def __init__(self, method: bytes, max_head: int) -> None:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head + 1)
        conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"upstream")]))
        conn.send(h11.EndOfMessage())
        self._conn = conn

    def head(self, head: bytes, method: bytes) -> Headers:
        strict_head(head)
        conn = self._conn
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        if type(event) is not h11.Response and type(event) is not h11.InformationalResponse:
            raise ProtocolError(f"expected a response, got {event!r}")
        return _fields(event)

    def chunked(self, piece: bytes, out: deque[Event]) -> bool:
        return _chunked(self._conn, piece, out)
