"""RequestContext: what a gRPC method handler may read about its call and add to its answer."""

from __future__ import annotations

import math

import trio

from proxy.grpc.metadata import incoming_metadata, outgoing_metadata
from proxy.http.model import Headers, Request, StreamInfo


class RequestContext:
    """One call as its handler sees it.

    `metadata` is the request's custom metadata (reserved gRPC fields dropped, `-bin` values
    base64-decoded); `request` is the whole HTTP request for anything else; `info` carries the
    peer (address, TLS, SPIFFE identity), route and trace of the request. `deadline` is the trio
    time the call must end by (`inf` when the client gave no `grpc-timeout`).
    """

    __slots__ = ("_headers", "_trailers", "deadline", "metadata", "method", "request")

    def __init__(self, request: Request, method: str, deadline: float = math.inf) -> None:
        self.request = request
        self.method = method
        self.deadline = deadline
        self.metadata: Headers = incoming_metadata(request.headers)
        self._headers: Headers = []
        self._trailers: Headers = []

    @property
    def info(self) -> StreamInfo:
        return self.request.info

    @property
    def peer_identity(self) -> str | None:
        """The SPIFFE ID of a mutual-TLS peer, when the connection had one."""
        return self.request.info.peer_identity

    def get(self, name: bytes) -> bytes | None:
        """First metadata value of `name` (lower-case), decoded if it is a `-bin` key."""
        for key, value in self.metadata:
            if key == name:
                return value
        return None

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), None without a deadline."""
        if self.deadline == math.inf:
            return None
        return max(0.0, self.deadline - trio.current_time())

    def add_header(self, name: bytes, value: bytes) -> None:
        """Initial metadata, sent with the response headers (`-bin` values are base64-encoded)."""
        self._headers.extend(outgoing_metadata([(name, value)]))

    def add_trailer(self, name: bytes, value: bytes) -> None:
        """Trailing metadata, sent with the status (`-bin` values are base64-encoded)."""
        self._trailers.extend(outgoing_metadata([(name, value)]))

    @property
    def response_headers(self) -> Headers:
        return list(self._headers)

    @property
    def response_trailers(self) -> Headers:
        return list(self._trailers)
