"""Why a store operation failed, in words a user can act on."""

from __future__ import annotations

import sqlite3

__all__ = ["describe"]

# Primary result codes (https://www.sqlite.org/rescode.html); the extended code's low
# byte is the primary one.
_CAUSES = {
    3: "permission denied",
    5: "the database is locked by another process",
    6: "the database is locked",
    8: "the file or its directory is read-only",
    10: "input/output error",
    11: "the database file is corrupt",
    13: "the disk is full",
    14: "the file cannot be opened",
    26: "the file is not a certpair trust store (not an SQLite database)",
}


def describe(exc: sqlite3.Error) -> str:
    """Return the cause of ``exc`` as a short phrase (disk full, read-only, corrupt…)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _CAUSES:
        return _CAUSES[code & 0xFF]
    text = str(exc).strip()
    return text or type(exc).__name__
