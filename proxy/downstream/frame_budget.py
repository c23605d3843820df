"""Budgets for inbound HTTP/2 frames that do no work, earned by the work the connection does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.connection
import h2.errors
import h2.exceptions
from hyperframe.frame import (
    AltSvcFrame,
    ExtensionFrame,
    Frame,
    PriorityFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from config.schema import Limits

_Handler = Callable[[Frame], Any]


class FrameFlood(h2.exceptions.ProtocolError):
    """Raised inside h2's frame dispatch: h2 then queues GOAWAY with this code and re-raises."""

    error_code = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


class FrameBudget:
    """Frames left before GOAWAY(ENHANCE_YOUR_CALM); streams opened and DATA sent add to them.

    As Envoy does (max_inbound_priority_frames_per_stream,
    max_inbound_window_update_frames_per_data_frame_sent), the budgets are totals over the
    connection that grow with useful work, so a check is one subtraction and one comparison.
    """

    __slots__ = ("_ignored_per_stream", "_per_data", "_per_stream", "ignored", "priority", "window")

    def __init__(self, limits: Limits) -> None:
        self._per_stream = limits.max_priority_frames_per_stream
        self._ignored_per_stream = limits.max_ignored_frames_per_stream
        self._per_data = 2 * limits.max_window_updates_per_data_frame
        # Envoy's allowance: 5 + 2 * (streams + per_data_frame * data_frames_sent).
        self.window = 5
        self.priority = self._per_stream
        self.ignored = self._ignored_per_stream

    def stream_opened(self) -> None:
        """A request was accepted. That is known only after h2 has parsed the whole read that
        carried its HEADERS, so frames riding in the same read draw on the starting allowances."""
        self.window += 2
        self.priority += self._per_stream
        self.ignored += self._ignored_per_stream

    def data_sent(self) -> None:
        self.window += self._per_data

    def install(self, conn: h2.connection.H2Connection) -> None:
        """Count these frames where h2 dispatches them, before it spends any work on them."""
        # h2 emits no event for some of them (WINDOW_UPDATE or RST_STREAM for a closed stream,
        # ALTSVC at a server), so counting events would miss exactly the cheapest floods. The
        # table is h2's private API; tests/downstream/test_frame_budget.py floods each kind.
        table: dict[type[Frame], _Handler] = conn._frame_dispatch_table
        window_update, priority = table[WindowUpdateFrame], table[PriorityFrame]

        def on_window_update(frame: Frame) -> Any:
            self.window -= 1
            if self.window < 0:
                raise FrameFlood("too many WINDOW_UPDATE frames")
            return window_update(frame)

        def on_priority(frame: Frame) -> Any:
            self.priority -= 1
            if self.priority < 0:
                raise FrameFlood("too many PRIORITY frames")
            return priority(frame)

        def ignoring(handle: _Handler) -> _Handler:
            def on_ignored(frame: Frame) -> Any:
                self.ignored -= 1
                if self.ignored < 0:
                    raise FrameFlood("too many frames that are ignored")
                return handle(frame)

            return on_ignored

        rst_stream, streams = table[RstStreamFrame], conn.streams
        rst_ignored = ignoring(rst_stream)

        def on_rst_stream(frame: Frame) -> Any:
            # One for an open stream is a reset (rated by AbuseGuard); h2 drops the others
            # without an event.
            stream = streams.get(frame.stream_id)
            if stream is None or stream.closed:
                return rst_ignored(frame)
            return rst_stream(frame)

        table[WindowUpdateFrame] = on_window_update
        table[PriorityFrame] = on_priority
        table[ExtensionFrame] = ignoring(table[ExtensionFrame])
        table[AltSvcFrame] = ignoring(table[AltSvcFrame])
        table[RstStreamFrame] = on_rst_stream
