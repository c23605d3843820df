"""An OSError as the few words a one-line message ends with: "address already in use"."""

from __future__ import annotations


def os_reason(exc: OSError) -> str:
    """The system's reason, lower-cased to follow a colon; no errno, no repr."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]
