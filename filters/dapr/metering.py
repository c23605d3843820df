"""Bounded path labels for Dapr's HTTP metrics."""

from __future__ import annotations


def api_path(path: bytes, invocation: bool) -> str:
    """Dapr's low-cardinality `path` label: the API route, never a caller-chosen value (app ids
    and method paths would let any client mint new series)."""
    if invocation or path.startswith(b"/v1.0/invoke/"):
        return "/v1.0/invoke/*/method/*"
    if path.startswith(b"/v1.0/metadata/"):
        return "/v1.0/metadata/*"
    for api in (b"/v1.0/state/", b"/v1.0-alpha1/state/"):  # store names are caller-chosen too
        if path.startswith(api):
            return api.decode() + "*"
    text = path.decode("latin-1")
    return text if text.startswith("/v1.0/") and text.count("/") <= 3 else "other"
