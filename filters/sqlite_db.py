"""Opening the SQLite files the embedded backends (state.sqlite, pubsub.sqlite) live in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect"]


def connect(database: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection for worker threads: its directory made, autocommit (the backends issue
    BEGIN/COMMIT themselves), waiting up to `busy_timeout` seconds for another writer. A path
    beginning `file:` is a URI; `:memory:` stays in memory."""
    uri = database.startswith("file:")
    if not uri and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        database,
        uri=uri,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,  # used on worker threads, one at a time (the caller's lock)
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    except BaseException:
        conn.close()
        raise
    return conn
