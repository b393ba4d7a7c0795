"""The peers table's SQL: write, remove, rename and look up trusted devices."""

from __future__ import annotations

import re
import sqlite3

from certpair.store.records import MIN_PREFIX_DIGITS, Peer

__all__ = [
    "delete_peer",
    "select_peers",
    "selection_for_query",
    "set_confirmed",
    "update_name",
    "upsert_peer",
]

_HEX_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX_DIGITS},64}}")
_COLUMNS = "name, fingerprint, cert_der, mode, paired_at, confirmed"


def upsert_peer(db: sqlite3.Connection, peer: Peer) -> None:
    """Trust ``peer``; re-pairing a known certificate updates its name, mode and time."""
    db.execute(
        f"INSERT INTO peers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608  # constant
        " ON CONFLICT(fingerprint) DO UPDATE SET"
        " name = excluded.name, mode = excluded.mode, paired_at = excluded.paired_at,"
        " confirmed = excluded.confirmed",
        (peer.name, peer.fingerprint, peer.cert_der, peer.mode, peer.paired_at,
         int(peer.confirmed)),
    )


def set_confirmed(db: sqlite3.Connection, fingerprint: str) -> bool:
    """Mark the peer confirmed; return whether it was unconfirmed."""
    cursor = db.execute(
        "UPDATE peers SET confirmed = 1 WHERE fingerprint = ? AND confirmed = 0", (fingerprint,))
    return cursor.rowcount > 0


def delete_peer(db: sqlite3.Connection, fingerprint: str) -> bool:
    """Remove the peer; return whether a row went."""
    return db.execute("DELETE FROM peers WHERE fingerprint = ?", (fingerprint,)).rowcount > 0


def update_name(db: sqlite3.Connection, fingerprint: str, name: str) -> bool:
    """Rename the peer; return whether a row changed."""
    cursor = db.execute("UPDATE peers SET name = ? WHERE fingerprint = ?", (name, fingerprint))
    return cursor.rowcount > 0


def selection_for_query(query: str) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause and values that find peers named ``query`` or whose fingerprint
    starts with it (at least MIN_PREFIX_DIGITS hex digits, ``sha256:`` and colons
    optional, either case)."""
    digits = query.lower().removeprefix("sha256:").replace(":", "")
    if not _HEX_PREFIX.fullmatch(digits):
        return "WHERE name = ?", (query,)
    # Hex digits only, so the LIKE pattern holds no wildcard but the final one.
    return "WHERE name = ? OR fingerprint LIKE ?", (query, f"sha256:{digits}%")


def select_peers(db: sqlite3.Connection, where: str, args: tuple[str, ...]) -> list[Peer]:
    """Return the peers ``where`` selects, oldest pairing first.

    ``where`` is one of this package's literal clauses; values are always bound.
    """
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM peers {where} ORDER BY paired_at, fingerprint",  # noqa: S608
        args,
    ).fetchall()
    return [Peer(name=n, fingerprint=fp, cert_der=der, mode=m, paired_at=at, confirmed=bool(c))
            for n, fp, der, m, at, c in rows]
