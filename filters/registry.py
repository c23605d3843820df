"""Filter config tag → factory, and which filters are terminal (must end a chain)."""

from __future__ import annotations

TERMINAL_FILTERS = frozenset({"router"})


def is_terminal(tag: str) -> bool:
    """True for filters that answer requests themselves and so must come last."""
    return tag in TERMINAL_FILTERS
