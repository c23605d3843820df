"""Let an h2 connection finish its streams after a GOAWAY, as RFC 9113 §6.8 allows."""

from __future__ import annotations

from typing import Any

import h2.connection

_CS = h2.connection.ConnectionState
_CI = h2.connection.ConnectionInputs

# h2 moves a connection to CLOSED on sending or receiving GOAWAY and then rejects every frame, yet
# streams at or below last_stream_id may run to completion. These inputs stay legal in CLOSED; the
# callers never open new streams after a GOAWAY themselves. (The table is h2's private API, so
# tests/integration drive a real GOAWAY drain to catch an h2 release that changes it.)
_GRACEFUL_CLOSED: dict[tuple[Any, Any], tuple[None, Any]] = {
    **h2.connection.H2ConnectionStateMachine._transitions,
    **{
        (_CS.CLOSED, getattr(_CI, name)): (None, _CS.CLOSED)
        for name in (
            "RECV_HEADERS",
            "RECV_DATA",
            "RECV_WINDOW_UPDATE",
            "RECV_PING",
            "RECV_SETTINGS",
            "RECV_RST_STREAM",
            "RECV_PRIORITY",
            "SEND_HEADERS",
            "SEND_DATA",
            "SEND_WINDOW_UPDATE",
            "SEND_PING",
            "SEND_SETTINGS",
            "SEND_RST_STREAM",
        )
    },
}


def allow_streams_after_goaway(conn: h2.connection.H2Connection) -> None:
    conn.state_machine._transitions = _GRACEFUL_CLOSED
