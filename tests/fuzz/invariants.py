"""What every fuzz example must hold: nothing logged as an error, and an end within a deadline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

HANG_DEADLINE = 20.0  # seconds: generous; a codec that has not ended by then is stuck


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
