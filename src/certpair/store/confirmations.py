"""Confirmations: a peer stored unconfirmed at pairing is confirmed once it showed that
it stored this device too.

A part of :class:`~certpair.store.trust.TrustStore` (see :mod:`~certpair.store.base`).
"""

from __future__ import annotations

import sqlite3
import time

from certpair.store import events as events_sql
from certpair.store import peers as peers_sql
from certpair.store.base import StoreBase
from certpair.store.records import Event, iso_time

__all__ = ["Confirmations"]


class Confirmations(StoreBase):
    """Settling a pairing whose outcome on the peer was unknown."""

    def confirm_peer(self, fingerprint_: str, *, remote: str, reason: str,
                     at: float | None = None, same_pairing: bool = False) -> bool:
        """Mark an unconfirmed peer confirmed (it showed it trusts this device) and log it.

        Args:
            fingerprint_: the peer's full fingerprint.
            remote: the peer's address.
            reason: how it showed it (its COMMITTED frame, a trusted connection).
            at: time of the change (seconds since the epoch); now if omitted.
            same_pairing: the confirmation ends the very pairing that stored the peer
                (the joiner's COMMITTED): the log keeps one row for that outcome, the
                pairing's own, no longer marked unconfirmed, instead of a second row.

        Returns:
            Whether the peer was unconfirmed (False: confirmed already, or not stored).

        Raises:
            StoreUnusable: the write failed.
        """
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                peer = self.peer(fingerprint_)
                if peer is None or not peers_sql.set_confirmed(self._db, fingerprint_):
                    return False
                if same_pairing and _settle_pairing_row(self._db, fingerprint_, reason):
                    return True
                events_sql.insert_event(self._db, Event(
                    at=when, kind="pairing", role="local", remote=remote, mode=peer.mode,
                    outcome="confirmed", reason=reason, peer_fingerprint=peer.fingerprint,
                    peer_name=peer.name,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        return True


def _settle_pairing_row(db: sqlite3.Connection, fingerprint_: str, reason: str) -> bool:
    """Turn the newest ``paired`` row of this peer, marked unconfirmed, into the row of a
    confirmed pairing; False when there is none (then a row of its own is written)."""
    row = db.execute(
        "SELECT id, reason FROM events WHERE kind = 'pairing' AND outcome = 'paired'"
        " AND peer_fingerprint = ? ORDER BY id DESC LIMIT 1", (fingerprint_,)).fetchone()
    if row is None or "unconfirmed" not in row[1].split("; "):
        return False
    notes = [note for note in row[1].split("; ") if note != "unconfirmed"]
    db.execute("UPDATE events SET reason = ? WHERE id = ?", ("; ".join([reason, *notes]),
                                                              row[0]))
    return True
