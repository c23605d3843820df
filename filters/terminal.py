"""Which filters are terminal (answer requests themselves, so must end a chain); no imports."""

TERMINAL_FILTERS = frozenset({"router", "dapr_api", "dapr_grpc", "dapr_internal"})


def is_terminal(tag: str) -> bool:
    """True for filters that answer requests themselves and so must come last."""
    return tag in TERMINAL_FILTERS
