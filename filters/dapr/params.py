"""Dapr API conventions the building blocks share: `metadata.*` query keys, metadata names, JSON."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

__all__ = ["is_json_content_type", "metadata_params", "metadata_value"]


def metadata_params(query: bytes) -> dict[str, str]:
    """`?metadata.x=y` as {"x": "y"} (the first value of each)."""
    pairs = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    return {k[len("metadata.") :]: v[0] for k, v in pairs.items() if k.startswith("metadata.")}


def metadata_value(metadata: Mapping[str, str], key: str) -> str:
    """The value of `key` ("" when absent); daprd matches metadata names case-insensitively."""
    lowered = key.lower()
    return next((v for k, v in metadata.items() if k.lower() == lowered), "")


def is_json_content_type(content_type: str) -> bool:
    """application/json (with parameters) or any `+json` suffix type."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
