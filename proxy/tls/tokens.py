"""Signing tokens: which token may obtain certificates for which app ids (`ca serve`)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.tls.errors import CaError
from proxy.tls.spiffe import SpiffeId

ANY_APP = "*"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class _Grant:
    digest: bytes
    apps: frozenset[tuple[str, str]]  # (namespace, app id) pairs this token may sign for
    any_app: bool


class TokenTable:
    """Which token may sign for which apps, read from a `--token-file`.

    One entry per line: ``TOKEN APP[.NAMESPACE] ...`` or ``TOKEN *``; an app without a
    namespace means the ``default`` namespace; lines for the same token add up; ``#`` comments.
    Only SHA-256 digests of the tokens are kept.
    """

    def __init__(self, grants: Mapping[bytes, _Grant]) -> None:
        self._grants = tuple(grants.values())

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CaError(f"{path}: cannot read the token file: {exc}") from None
        grants: dict[bytes, _Grant] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) < 2:
                raise CaError(f"{path}:{number}: expected TOKEN APP[.NAMESPACE]|* (no app listed)")
            digest = _digest(words[0])
            apps, any_app = set[tuple[str, str]](), False
            for word in words[1:]:
                if word == ANY_APP:
                    any_app = True
                    continue
                app_id, _, namespace = word.partition(".")
                try:
                    SpiffeId("x", namespace or "default", app_id)
                except ValueError as exc:
                    raise CaError(f"{path}:{number}: {exc}") from None
                apps.add((namespace or "default", app_id))
            old = grants.get(digest, _Grant(digest, frozenset(), False))
            grants[digest] = _Grant(digest, old.apps | apps, old.any_app or any_app)
        if not grants:
            raise CaError(f"{path}: no tokens (one `TOKEN APP[.NAMESPACE]|*` per line)")
        return cls(grants)

    def authenticate(self, token: str) -> _Grant | None:
        """The grant of ``token``; every entry is compared, in constant time."""
        digest, found = _digest(token), None
        for grant in self._grants:
            if hmac.compare_digest(grant.digest, digest):
                found = grant
        return found
