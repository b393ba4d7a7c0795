"""The peers table's SQL: write, remove, rename and look up trusted devices."""

from __future__ import annotations

import re
import sqlite3

from certpair.names import MAX_NAME_BYTES
from certpair.store.anchors import row_hash
from certpair.store.identity_keys import taken_name
from certpair.store.records import MIN_PREFIX_DIGITS, Peer

__all__ = [
    "count_peers",
    "delete_peer",
    "distinct_name",
    "select_page_after",
    "select_peers",
    "selection_for_query",
    "set_confirmed",
    "update_name",
    "upsert_peer",
]

_HEX_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX_DIGITS},64}}")
_COLUMNS = "name, fingerprint, cert_der, mode, paired_at, confirmed"
_SELECTED = f"{_COLUMNS}, device_id"


def upsert_peer(db: sqlite3.Connection, peer: Peer) -> tuple[str, bool]:
    """Trust ``peer``; re-pairing a known certificate updates its name, mode and time.

    Returns the row's device id (a new row gets a fresh one; a known row keeps its
    own: store/devices.py), and whether the row is new: asked here, in the caller's
    transaction, so no other writer can come between the answer and the write.

    The row carries its certificate's subject hash, which files it in the anchor
    directory (a trigger marks that bucket for :func:`~certpair.store.anchors.sync_anchors`).
    """
    known = db.execute("SELECT device_id FROM peers WHERE fingerprint = ?",
                       (peer.fingerprint,)).fetchone()
    db.execute(
        f"INSERT INTO peers ({_COLUMNS}, subject_hash, device_id)"  # noqa: S608  # constant
        " VALUES (?, ?, ?, ?, ?, ?, ?, lower(hex(randomblob(16))))"
        " ON CONFLICT(fingerprint) DO UPDATE SET"
        " name = excluded.name, mode = excluded.mode, paired_at = excluded.paired_at,"
        " confirmed = excluded.confirmed",
        (peer.name, peer.fingerprint, peer.cert_der, peer.mode, peer.paired_at,
         int(peer.confirmed), row_hash(peer.cert_der)),
    )
    row = known or db.execute("SELECT device_id FROM peers WHERE fingerprint = ?",
                              (peer.fingerprint,)).fetchone()
    return (str(row[0]) if row and row[0] else ""), known is None


def set_confirmed(db: sqlite3.Connection, fingerprint: str) -> bool:
    """Mark the peer confirmed; return whether it was unconfirmed."""
    cursor = db.execute(
        "UPDATE peers SET confirmed = 1 WHERE fingerprint = ? AND confirmed = 0", (fingerprint,))
    return cursor.rowcount > 0


def distinct_name(db: sqlite3.Connection, name: str, fingerprint: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``… if another peer's name reads the same.

    Names are chosen by the peer, so two devices may both call themselves ``beta`` (or
    ``beta`` with a Cyrillic e, U+0435); the second is stored distinguishably. Each
    candidate is one seek in the identity index (:mod:`~certpair.store.identity_keys`),
    never a scan of the names. Read inside the caller's transaction.
    """
    candidate, number = name, 1
    while taken_name(db, candidate, fingerprint):
        number += 1
        suffix = f" ({number})"
        base = name
        while len((base + suffix).encode("utf-8")) > MAX_NAME_BYTES:
            base = base[:-1]
        candidate = base.rstrip() + suffix
    return candidate


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


def select_peers(db: sqlite3.Connection, where: str, args: tuple[str, ...], *,
                 limit: int | None = None, offset: int = 0) -> list[Peer]:
    """Return the peers ``where`` selects, oldest pairing first (index order).

    ``where`` is one of this package's literal clauses; values are always bound.
    ``limit`` and ``offset`` select a page.
    """
    rows = db.execute(
        f"SELECT {_SELECTED} FROM peers {where}"  # noqa: S608  # literal clauses only
        " ORDER BY paired_at, fingerprint LIMIT ? OFFSET ?",
        (*args, -1 if limit is None else limit, offset),
    ).fetchall()
    return [Peer(name=n, fingerprint=fp, cert_der=der, mode=m, paired_at=at, confirmed=bool(c),
                 device_id=d or "") for n, fp, der, m, at, c, d in rows]


def select_page_after(db: sqlite3.Connection, after: tuple[str, str] | None,
                      size: int) -> list[Peer]:
    """Return up to ``size`` peers that sort after ``(paired_at, fingerprint)`` (keyset
    paging: each page costs one index seek, however deep)."""
    if after is None:
        return select_peers(db, "", (), limit=size)
    return select_peers(db, "WHERE (paired_at, fingerprint) > (?, ?)", after, limit=size)


def count_peers(db: sqlite3.Connection) -> int:
    """Return how many peers the store holds."""
    return int(db.execute("SELECT count(*) FROM peers").fetchone()[0])
