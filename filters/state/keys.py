"""Dapr's state key scheme: the `keyPrefix` component metadata, applied and stripped back."""

from __future__ import annotations

from collections.abc import Mapping

from filters.dapr.params import metadata_value

SEPARATOR = "||"
KEY_PREFIX = "keyPrefix"


class IllegalKey(ValueError):
    """A key (or prefix) holding the reserved separator: 400 ERR_MALFORMED_REQUEST."""


def prefix_for(metadata: Mapping[str, str], store: str, app_id: str, namespace: str) -> str:
    """The prefix this store puts before every key ("" for none), as daprd's state loader
    chooses it: appid (the default), name, namespace, none, or any other string — daprd matches
    the metadata name case-insensitively and lower-cases the value, custom prefixes included.
    IllegalKey when the prefix holds `||` (the component then fails to initialise)."""
    strategy = metadata_value(metadata, KEY_PREFIX).lower() or "appid"
    if SEPARATOR in strategy:
        raise IllegalKey(f"input key/keyPrefix '{strategy}' can't contain '{SEPARATOR}'")
    match strategy:
        case "appid":
            return app_id
        case "name":
            return store
        case "namespace":
            return f"{namespace}.{app_id}" if namespace and app_id else app_id
        case "none":
            return ""
        case _:
            return strategy


class KeyScheme:
    """Turns the keys clients use into the keys stores hold, and back."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def full(self, key: str) -> str:
        """The stored key; IllegalKey when the key holds `||`."""
        if SEPARATOR in key:
            raise IllegalKey(f"input key/keyPrefix '{key}' can't contain '{SEPARATOR}'")
        if not self.prefix:
            return key
        return f"{self.prefix}{SEPARATOR}{key}"

    @staticmethod
    def original(stored: str) -> str:
        """The client's key: what follows the first `||` (a key without one is unchanged)."""
        head, sep, rest = stored.partition(SEPARATOR)
        return rest if sep else head
