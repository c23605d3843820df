"""The CA's data directory in Dapr Sentry's layout: create once (under a lock), read back."""

from __future__ import annotations

import logging
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from proxy.tls.builders import build_issuer, build_root, new_key
from proxy.tls.errors import CaError
from proxy.tls.files import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    ensure_private_dir,
    locked,
    write_atomic,
)
from proxy.tls.pem import (
    certificate_pem,
    check_key_matches,
    check_valid_at,
    load_certificates,
    load_private_key,
    private_key_pem,
)

log = logging.getLogger(__name__)

ROOT_CERT_FILE = "ca.crt"
ISSUER_CERT_FILE = "issuer.crt"
ISSUER_KEY_FILE = "issuer.key"
# Dapr Sentry keeps no root key beside the issuer. We write it (0600, in a 0700 directory) so a
# new issuer can be signed later without replacing the trust anchor every sidecar already holds:
# delete issuer.crt and issuer.key and the next init signs a fresh issuer. The root key is
# optional when loading, so an operator may move it offline.
ROOT_KEY_FILE = "root.key"
LOCK_FILE = ".ca.lock"
_FILES = (ROOT_CERT_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE, ROOT_KEY_FILE)


class Sources(NamedTuple):
    """Where each piece of CA material came from, for error messages."""

    roots: str
    issuer_cert: str
    issuer_key: str
    root_key: str


class Material(NamedTuple):
    """CA material as PEM bytes, not yet validated."""

    roots_pem: bytes
    issuer_cert_pem: bytes
    issuer_key_pem: bytes
    root_key_pem: bytes | None
    sources: Sources


def create_or_read(directory: Path, trust_domain: str, now: datetime, skew: timedelta) -> Material:
    """Create whatever of root and issuer is missing in ``directory``, then read it all back.

    An exclusive flock serialises sidecars starting together on one host, so they end with one
    root. Blocking: run it outside trio or through ``trio.to_thread.run_sync``.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(directory / LOCK_FILE, exclusive=True):
        has = {name for name in _FILES if (directory / name).exists()}
        issuer_files = {ISSUER_CERT_FILE, ISSUER_KEY_FILE}
        if ROOT_CERT_FILE not in has:
            if has & issuer_files:
                raise CaError(f"{directory / ROOT_CERT_FILE}: missing, but an issuer is present")
            # A lone root.key is what a crash mid-creation leaves: no one trusts it yet.
            _create_root(directory, trust_domain, now, skew)
            has |= {ROOT_CERT_FILE, ROOT_KEY_FILE}
        if not issuer_files <= has:
            if ROOT_KEY_FILE not in has:
                raise CaError(
                    f"{directory / ISSUER_CERT_FILE}: issuer incomplete and no {ROOT_KEY_FILE} "
                    "to sign a new one"
                )
            _create_issuer(directory, trust_domain, now, skew)
        return _read_material(directory)


def read(directory: Path) -> Material:
    """Read existing material (root.key optional) under a shared lock."""
    with locked(directory / LOCK_FILE, exclusive=False):
        return _read_material(directory)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaError(f"{path}: missing") from None
    except OSError as exc:
        raise CaError(f"{path}: cannot read ({exc.strerror})") from None


def _read_key(path: Path) -> bytes:
    key = _read(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s: private key is accessible to other users (mode %o)", path, mode)
    return key


def _read_material(directory: Path) -> Material:
    root_key = directory / ROOT_KEY_FILE
    return Material(
        _read(directory / ROOT_CERT_FILE),
        _read(directory / ISSUER_CERT_FILE),
        _read_key(directory / ISSUER_KEY_FILE),
        _read_key(root_key) if root_key.exists() else None,
        Sources(*(str(directory / name) for name in _FILES)),
    )


def _create_root(directory: Path, trust_domain: str, now: datetime, skew: timedelta) -> None:
    ensure_private_dir(directory)
    key = new_key()
    root = build_root(key, trust_domain, now, skew)
    # Key first: a crash in between leaves a lone root.key, which the next init replaces.
    write_atomic(directory / ROOT_KEY_FILE, private_key_pem(key), PRIVATE_FILE_MODE)
    write_atomic(directory / ROOT_CERT_FILE, certificate_pem(root), PUBLIC_FILE_MODE)
    log.info("created CA root for trust domain %s in %s", trust_domain, directory)


def _create_issuer(directory: Path, trust_domain: str, now: datetime, skew: timedelta) -> None:
    ensure_private_dir(directory)
    root_path, root_key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
    root = load_certificates(_read(root_path), str(root_path))[0]
    root_key = load_private_key(_read(root_key_path), str(root_key_path))
    check_key_matches(root_key, str(root_key_path), root, str(root_path))
    check_valid_at(root, str(root_path), now)
    key = new_key()
    issuer = build_issuer(key, root, root_key, trust_domain, now, skew)
    write_atomic(directory / ISSUER_KEY_FILE, private_key_pem(key), PRIVATE_FILE_MODE)
    write_atomic(directory / ISSUER_CERT_FILE, certificate_pem(issuer), PUBLIC_FILE_MODE)
    log.info("created CA issuer in %s", directory)
