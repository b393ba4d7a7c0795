"""The rotating side's records: which peers acknowledged this device's pending
certificate (where peers are: :mod:`~certpair.store.address_book`).

A part of :class:`~certpair.store.trust.TrustStore` (see :mod:`~certpair.store.base`).
"""

from __future__ import annotations

import sqlite3
import time

from certpair.store import events as events_sql
from certpair.store.base import StoreBase
from certpair.store.records import Event, Peer, iso_time

__all__ = ["RotatingSide"]


class RotatingSide(StoreBase):
    """Whom this device told of its rotation."""

    def told_peers(self, new_fingerprint: str) -> set[str]:
        """The peers that acknowledged this device's certificate ``new_fingerprint``."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT peer_fingerprint FROM rotation_told WHERE new_fingerprint = ?",
                    (new_fingerprint,)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return {fp for (fp,) in rows}

    def record_told(self, new_fingerprint: str, peer: Peer, *, remote: str,
                    at: float | None = None) -> None:
        """Remember (and log) that ``peer`` acknowledged this device's new certificate."""
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT OR IGNORE INTO rotation_told (new_fingerprint, peer_fingerprint,"
                    " told_at) VALUES (?, ?, ?)", (new_fingerprint, peer.fingerprint, when))
                events_sql.insert_event(self._db, Event(
                    at=when, kind="rotation", role="rotating", remote=remote, mode=peer.mode,
                    outcome="told", reason=f"new certificate {new_fingerprint}",
                    peer_fingerprint=peer.fingerprint, peer_name=peer.name))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def forget_told(self, new_fingerprint: str) -> None:
        """Drop the acknowledgements of an abandoned certificate."""
        try:
            with self._lock, self._db:
                self._db.execute("DELETE FROM rotation_told WHERE new_fingerprint = ?",
                                 (new_fingerprint,))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
