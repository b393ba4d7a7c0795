"""The change counter of the peers table, and durable commits for removals of trust."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = ["peers_version", "synchronous_full"]


def peers_version(db: sqlite3.Connection) -> int:
    """Return the counter that SQLite triggers bump on every change to the peers."""
    row = db.execute("SELECT value FROM meta WHERE key = 'peers_version'").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def synchronous_full(db: sqlite3.Connection) -> Iterator[None]:
    """Make the commits inside durable on disk before they return."""
    db.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        db.execute("PRAGMA synchronous=NORMAL")
