"""Why a store operation failed, in words a user can act on."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["CORRUPT", "DISK_FULL", "describe", "disk_full", "is_corrupt"]

DISK_FULL = "the disk is full"
# What a damaged store is called, and what to do about it (docs/SECURITY.md).
CORRUPT = ("the database file is corrupt; restore it from a backup, or move it away "
           "(and .trust-store-exists with it) and pair again")

# Primary result codes (https://www.sqlite.org/rescode.html); the extended code's low
# byte is the primary one.
_IOERR, _CORRUPT, _FULL, _NOTADB = 10, 11, 13, 26
_CAUSES = {
    3: "permission denied",
    5: "the database is locked by another process",
    6: "the database is locked",
    8: "the file or its directory is read-only",
    _IOERR: "input/output error",
    _CORRUPT: CORRUPT,
    _FULL: DISK_FULL,
    14: "the file cannot be opened",
    _NOTADB: "the file is not a certpair trust store (not an SQLite database)",
}
# SQLite needs this much room to open a WAL store that no other process has open (its
# shared-memory index); with less, every open fails with an I/O error.
_ROOM_TO_OPEN = 64 * 1024


def _primary(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def disk_full(where: Path) -> bool:
    """Whether the file system holding ``where`` has (almost) no room left."""
    try:
        stat = os.statvfs(where)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _ROOM_TO_OPEN


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file's bytes are damaged: SQLite's own verdict, or a
    text column that no longer decodes (Python's "Could not decode to UTF-8")."""
    if _primary(exc) == _CORRUPT:
        return True
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        "Could not decode")


def describe(exc: sqlite3.Error, where: Path | None = None) -> str:
    """Return the cause of ``exc`` as a short phrase (disk full, read-only, corrupt…).

    Never quotes the store's bytes. ``where`` (the store's directory) tells an I/O
    error that comes from a full disk from any other.
    """
    if is_corrupt(exc):
        return CORRUPT
    code = _primary(exc)
    if code == _IOERR and where is not None and disk_full(where):
        return DISK_FULL
    if code in _CAUSES:
        return _CAUSES[code]
    text = str(exc).strip()
    return text or type(exc).__name__
