"""Key rotation in the store: peers' successors, whom this device told, where peers are.

*Successors* (the peer side): a peer that rotates sends its new certificate; it is stored
as that peer's pending successor and is a trust anchor next to the peer's certificate
(the ``trusted_certs`` view, which the anchor directory is written from;
:meth:`SuccessorsMixin.acceptable_certificates`) until the first connection that presents
it (:meth:`SuccessorsMixin.admit`), which makes it the peer's only certificate. One
pending successor per peer: the first one stored wins (docs/SECURITY.md §8).

*Told* (the rotating side): which peers acknowledged this device's pending certificate.
*Addresses*: where each peer's ``serve`` was last reached, for ``certpair sync --all``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from certpair.identity import fingerprint
from certpair.store import events as events_sql
from certpair.store import peers as peers_sql
from certpair.store.anchors import row_hash
from certpair.store.changes import synchronous_full
from certpair.store.records import Event, Peer, StoreUnusable, iso_time

__all__ = ["MIGRATION_5", "Successor", "SuccessorVerdict", "SuccessorsMixin"]

# Schema step 5 (see store.schema): successors, told, addresses, the view of every
# trusted certificate (the anchor directory is written from it), and their triggers.
MIGRATION_5 = """
CREATE TABLE IF NOT EXISTS successors (
    fingerprint      TEXT PRIMARY KEY,
    peer_fingerprint TEXT NOT NULL,
    cert_der         BLOB NOT NULL,
    subject_hash     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'completed')),
    learned_at       TEXT NOT NULL,
    completed_at     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS successors_one_pending
    ON successors (peer_fingerprint) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS rotation_told (
    new_fingerprint  TEXT NOT NULL,
    peer_fingerprint TEXT NOT NULL,
    told_at          TEXT NOT NULL,
    PRIMARY KEY (new_fingerprint, peer_fingerprint)
);
CREATE TABLE IF NOT EXISTS peer_addresses (
    peer_fingerprint TEXT PRIMARY KEY,
    address          TEXT NOT NULL,
    seen_at          TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS trusted_certs (fingerprint, cert_der, subject_hash) AS
    SELECT fingerprint, cert_der, subject_hash FROM peers
    UNION ALL
    SELECT s.fingerprint, s.cert_der, s.subject_hash FROM successors s
    JOIN peers p ON p.fingerprint = s.peer_fingerprint WHERE s.state = 'pending';
CREATE TRIGGER IF NOT EXISTS successors_inserted AFTER INSERT ON successors BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
    INSERT OR REPLACE INTO anchor_pending VALUES (NEW.subject_hash, randomblob(8));
END;
CREATE TRIGGER IF NOT EXISTS successors_updated AFTER UPDATE ON successors BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
    INSERT OR REPLACE INTO anchor_pending VALUES (OLD.subject_hash, randomblob(8));
    INSERT OR REPLACE INTO anchor_pending VALUES (NEW.subject_hash, randomblob(8));
END;
CREATE TRIGGER IF NOT EXISTS successors_deleted AFTER DELETE ON successors BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
    INSERT OR REPLACE INTO anchor_pending VALUES (OLD.subject_hash, randomblob(8));
END;
CREATE TRIGGER IF NOT EXISTS peers_deleted_successors AFTER DELETE ON peers BEGIN
    DELETE FROM successors WHERE peer_fingerprint = old.fingerprint AND state = 'pending';
    DELETE FROM peer_addresses WHERE peer_fingerprint = old.fingerprint;
END;
"""



@dataclass(frozen=True, kw_only=True)
class Successor:
    """A peer's rotation as this store knows it.

    ``state`` is ``pending`` (both certificates trusted) or ``completed`` (the peer
    connected under the new one; ``peer_fingerprint`` is then the certificate it left).
    """

    fingerprint: str
    peer_fingerprint: str
    state: str
    learned_at: str
    completed_at: str | None


class SuccessorVerdict(Exception):
    """Internal: why a successor cannot be stored (``reason`` is a SyncResult name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SuccessorsMixin:
    """The rotation methods of :class:`~certpair.store.TrustStore`."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    path: Path

    def _write_error(self, exc: sqlite3.Error) -> StoreUnusable:
        raise NotImplementedError

    def _read_error(self, exc: sqlite3.Error) -> StoreUnusable:
        raise NotImplementedError

    def _follow_anchors(self) -> None:
        raise NotImplementedError

    # -- the peer side ------------------------------------------------------------------

    def acceptable_certificates(self, peer_fingerprint: str | None = None) -> dict[str, bytes]:
        """The certificates a trusted connection may present, by fingerprint: every
        peer's and every pending successor's (the ``trusted_certs`` view the anchor
        directory is written from), or those of one peer (its own and its pending
        successor's)."""
        sql = "SELECT fingerprint, cert_der FROM trusted_certs"
        args: tuple[str, ...] = ()
        if peer_fingerprint is not None:
            sql = ("SELECT fingerprint, cert_der FROM peers WHERE fingerprint = ?"
                   " UNION ALL SELECT fingerprint, cert_der FROM successors"
                   " WHERE peer_fingerprint = ? AND state = 'pending'")
            args = (peer_fingerprint, peer_fingerprint)
        try:
            with self._lock:
                return dict(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def learn_successor(self, peer_fingerprint: str, cert_der: bytes, *, remote: str,
                        others_check: Callable[[bytes, list[bytes]], None] | None = None,
                        at: float | None = None) -> bool:
        """Store ``cert_der`` as the pending successor of a peer, and log it.

        Args:
            peer_fingerprint: the peer's current certificate (the connection's).
            cert_der: its new certificate; its profile was checked by the caller.
            remote: the peer's address, for the log.
            others_check: called with (cert_der, other certificates) inside the
                transaction; raises ``SuccessorVerdict('CONFLICT')`` on a name collision.
            at: time (seconds since the epoch); now if omitted.

        Returns:
            True if stored now, False if this very successor was already stored.

        Raises:
            SuccessorVerdict: ``NOT_A_PEER`` or ``CONFLICT`` (nothing stored).
            StoreUnusable: the write failed.
        """
        new_fp = fingerprint(cert_der)
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                found = peers_sql.select_peers(self._db, "WHERE fingerprint = ?",
                                               (peer_fingerprint,))
                if not found:
                    raise SuccessorVerdict("NOT_A_PEER")
                peer = found[0]
                pending = self._db.execute(
                    "SELECT fingerprint FROM successors WHERE peer_fingerprint = ?"
                    " AND state = 'pending'", (peer_fingerprint,)).fetchone()
                if pending is not None:
                    if pending[0] == new_fp:
                        return False
                    raise SuccessorVerdict("CONFLICT")  # the first rotation stored wins
                anchors = dict(self._db.execute(
                    "SELECT fingerprint, cert_der FROM trusted_certs").fetchall())
                taken = self._db.execute(
                    "SELECT 1 FROM successors WHERE fingerprint = ?", (new_fp,)).fetchone()
                if new_fp in anchors or taken is not None:
                    raise SuccessorVerdict("CONFLICT")
                if others_check is not None:
                    others_check(cert_der, [der for fp, der in anchors.items()
                                            if fp != peer_fingerprint])
                self._db.execute(
                    "INSERT INTO successors (fingerprint, peer_fingerprint, cert_der,"
                    " subject_hash, state, learned_at) VALUES (?, ?, ?, ?, 'pending', ?)",
                    (new_fp, peer_fingerprint, cert_der, row_hash(cert_der), when))
                events_sql.insert_event(self._db, Event(
                    at=when, kind="rotation", role="peer", remote=remote, mode=peer.mode,
                    outcome="learned", reason=f"successor {new_fp}",
                    peer_fingerprint=peer_fingerprint, peer_name=peer.name))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        self._follow_anchors()
        return True

    def admit(self, fingerprint_: str, *, at: float | None = None) -> Peer | None:
        """Return the peer a connection's certificate belongs to, completing a rotation.

        A pending successor's first connection makes it the peer's only certificate
        (one transaction, durable): the old certificate is trusted no more.

        Returns:
            The peer (under its new fingerprint after a completion), or None.

        Raises:
            StoreUnusable: the read or write failed.
        """
        try:
            with self._lock:
                found = peers_sql.select_peers(self._db, "WHERE fingerprint = ?",
                                               (fingerprint_,))
                if found:
                    return found[0]
                row = self._db.execute(
                    "SELECT peer_fingerprint, cert_der FROM successors"
                    " WHERE fingerprint = ? AND state = 'pending'", (fingerprint_,)).fetchone()
                if row is None:
                    return None
                peer = self._complete(row[0], fingerprint_, row[1], at)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        self._follow_anchors()
        return peer

    def _complete(self, old_fp: str, new_fp: str, cert_der: bytes,
                  at: float | None) -> Peer | None:
        when = iso_time(time.time() if at is None else at)
        with synchronous_full(self._db), self._db:
            found = peers_sql.select_peers(self._db, "WHERE fingerprint = ?", (old_fp,))
            if not found:
                return None
            old = found[0]
            self._db.execute(
                "UPDATE peers SET fingerprint = ?, cert_der = ?, subject_hash = ?"
                " WHERE fingerprint = ?", (new_fp, cert_der, row_hash(cert_der), old_fp))
            self._db.execute("UPDATE successors SET state = 'completed', completed_at = ?"
                             " WHERE fingerprint = ?", (when, new_fp))
            for table in ("rotation_told", "peer_addresses"):
                self._db.execute(
                    f"UPDATE OR REPLACE {table} SET peer_fingerprint = ?"  # noqa: S608
                    " WHERE peer_fingerprint = ?", (new_fp, old_fp))
            events_sql.insert_event(self._db, Event(
                at=when, kind="rotation", role="peer", remote="", mode=old.mode,
                outcome="completed", reason=f"was {old_fp}", peer_fingerprint=new_fp,
                peer_name=old.name))
        return Peer(name=old.name, fingerprint=new_fp, cert_der=cert_der, mode=old.mode,
                    paired_at=old.paired_at, confirmed=old.confirmed)

    def successors(self) -> list[Successor]:
        """Every rotation of a peer this store has seen, pending and completed."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT fingerprint, peer_fingerprint, state, learned_at, completed_at"
                    " FROM successors ORDER BY learned_at, fingerprint").fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return [Successor(fingerprint=f, peer_fingerprint=p, state=s, learned_at=la,
                          completed_at=ca) for f, p, s, la, ca in rows]

    # -- the rotating side --------------------------------------------------------------

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

    # -- addresses ----------------------------------------------------------------------

    def remember_address(self, peer_fingerprint: str, address: str,
                         *, at: float | None = None) -> None:
        """Remember where a peer's ``serve`` answered (``host:port``)."""
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO peer_addresses (peer_fingerprint, address, seen_at)"
                    " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM peers WHERE fingerprint = ?)"
                    " ON CONFLICT(peer_fingerprint) DO UPDATE SET address = excluded.address,"
                    " seen_at = excluded.seen_at",
                    (peer_fingerprint, address, when, peer_fingerprint))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def addresses(self) -> dict[str, str]:
        """Where each peer's ``serve`` was last reached, by peer fingerprint."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT peer_fingerprint, address FROM peer_addresses").fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return dict(rows)
