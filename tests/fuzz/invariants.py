"""What every fuzz example must hold: nothing logged as an error, an end within a deadline, and
bounded memory."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

HANG_DEADLINE = 20.0  # seconds: generous; a codec that has not ended by then is stuck
PEAK_BYTES = 16 << 20  # what one example (inputs of a few KiB) may allocate at its peak


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_errors_logged() -> Iterator[None]:
    """Fail if anything logs at ERROR or above while the block runs: an exception that escaped
    to a connection's guard is logged there, so this is how a crash shows."""
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    messages = [f"{r.name}: {r.getMessage()}" for r in handler.records]
    assert messages == [], messages


@contextmanager
def bounded_memory(limit: int = PEAK_BYTES) -> Iterator[None]:
    """Fail if the block's Python allocations peak above `limit` (a buffer that grows with
    what a peer sends instead of staying within the limits)."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peaked at {peak} bytes"
