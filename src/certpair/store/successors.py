"""Key rotation in the store: peers' successors, whom this device told, where peers are.

*Successors* (the peer side): a peer that rotates sends its new certificate; it is stored
as that peer's pending successor and is a trust anchor next to the peer's certificate
(the ``trusted_certs`` view, which the anchor directory is written from;
:meth:`SuccessorAdmission.acceptable_certificates`) until the first connection that presents
it (:meth:`SuccessorAdmission.admit`), which makes it the peer's only certificate. One
pending successor per peer: the first one stored wins (docs/SECURITY.md §8).

A successor is held to the collision rule (:mod:`~certpair.store.identity_keys`): its
subject and names must be no other peer's (pending successors included) and not this
device's own. A second, different rotation signed by a peer's key is the signature of a
stolen key: it is refused and the peer is marked (:class:`KeyAlarm`) until it is unpaired.
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass

from certpair.identity import fingerprint
from certpair.profile import CertificateRefused, certificate_keys
from certpair.store import events as events_sql
from certpair.store import identity_keys as keys_sql
from certpair.store import peers as peers_sql
from certpair.store.anchors import row_hash
from certpair.store.base import StoreBase
from certpair.store.changes import synchronous_full
from certpair.store.records import Event, Peer, iso_time

__all__ = [
    "MIGRATION_5", "KeyAlarm", "Refusal", "Successor", "SuccessorAdmission", "SuccessorVerdict",
]

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


@dataclass(frozen=True, kw_only=True)
class KeyAlarm:
    """A peer whose key signed two different rotations: the first one stored is kept,
    the other was refused. Either the device aborted a rotation it had told (``rotate
    --abort --force``) or someone else holds its key; the way out is to unpair it and
    pair again."""

    peer_fingerprint: str
    kept_successor: str
    other_successor: str
    seen_at: str


class Refusal(enum.Enum):
    """Why a successor cannot be stored. The sync driver maps each member to its answer
    on the wire (``rotation.exchange``); a member without one fails mypy there."""

    CERTIFICATE_REFUSED = "the new certificate breaks the pairing profile"
    NOT_A_PEER = "the sender is no longer a stored peer"
    CONFLICT = "the new certificate collides with another device's, or another is pending"


class SuccessorVerdict(Exception):
    """Internal: why a successor cannot be stored (``key_conflict``: a second, different
    rotation signed by the peer's key, now marked, see
    :meth:`SuccessorAdmission.key_alarms`)."""

    def __init__(self, reason: Refusal, *, key_conflict: bool = False) -> None:
        super().__init__(reason.name)
        self.reason = reason
        self.key_conflict = key_conflict


class SuccessorAdmission(StoreBase):
    """The peer side of key rotation: learning, trusting and completing successors."""

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
                        reserved: Collection[bytes] = (), at: float | None = None) -> bool:
        """Store ``cert_der`` as the pending successor of a peer, and log it.

        Args:
            peer_fingerprint: the peer's current certificate (the connection's).
            cert_der: its new certificate; its profile was checked by the caller.
            remote: the peer's address, for the log.
            reserved: this device's own certificates (current and pending), whose
                subject and names no peer's successor may carry.
            at: time (seconds since the epoch); now if omitted.

        Returns:
            True if stored now, False if this very successor was already stored.

        Raises:
            SuccessorVerdict: ``NOT_A_PEER`` or ``CONFLICT`` (nothing stored; a second
                rotation different from the pending one also marks the peer, see
                :meth:`key_alarms`).
            StoreUnusable: the write failed.
        """
        new_fp = fingerprint(cert_der)
        when = iso_time(time.time() if at is None else at)
        try:
            new_keys = certificate_keys(cert_der)
        except CertificateRefused:
            raise SuccessorVerdict(Refusal.CERTIFICATE_REFUSED) from None
        own = set()
        for mine in reserved:
            own |= keys_sql.peer_keys(mine)
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                found = peers_sql.select_peers(self._db, "WHERE fingerprint = ?",
                                               (peer_fingerprint,))
                if not found:
                    raise SuccessorVerdict(Refusal.NOT_A_PEER)
                peer = found[0]
                pending = self._db.execute(
                    "SELECT fingerprint FROM successors WHERE peer_fingerprint = ?"
                    " AND state = 'pending'", (peer_fingerprint,)).fetchone()
                if pending is not None and pending[0] == new_fp:
                    return False
                if pending is not None:
                    # The first rotation stored wins; a different one signed by the same
                    # key is marked, in this transaction, before the refusal.
                    self._alarm(peer, pending[0], new_fp, remote, when)
                    self._db.execute("COMMIT")
                    raise SuccessorVerdict(Refusal.CONFLICT, key_conflict=True)
                taken = self._db.execute(
                    "SELECT 1 FROM peers WHERE fingerprint = ? UNION ALL"
                    " SELECT 1 FROM successors WHERE fingerprint = ?",
                    (new_fp, new_fp)).fetchone()
                if (taken is not None or new_keys & own
                        or keys_sql.collision(self._db, new_keys, peer_fingerprint)):
                    raise SuccessorVerdict(Refusal.CONFLICT)
                self._db.execute(
                    "INSERT INTO successors (fingerprint, peer_fingerprint, cert_der,"
                    " subject_hash, state, learned_at, device_id)"
                    " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                    (new_fp, peer_fingerprint, cert_der, row_hash(cert_der), when,
                     peer.device_id or None))
                keys_sql.rekey(self._db, peer_fingerprint)
                events_sql.insert_event(self._db, Event(
                    at=when, kind="rotation", role="peer", remote=remote, mode=peer.mode,
                    outcome="learned", reason=f"successor {new_fp}",
                    peer_fingerprint=peer_fingerprint, peer_name=peer.name))
        except CertificateRefused:
            raise SuccessorVerdict(Refusal.CONFLICT) from None
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        self._follow_anchors()
        return True

    def _alarm(self, peer: Peer, kept: str, other: str, remote: str, when: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO key_alarms (peer_fingerprint, kept_successor,"
            " other_successor, seen_at) VALUES (?, ?, ?, ?)",
            (peer.fingerprint, kept, other, when))
        events_sql.insert_event(self._db, Event(
            at=when, kind="rotation", role="peer", remote=remote, mode=peer.mode,
            outcome="key conflict",
            reason=f"a second, different rotation signed by its key ({other}); kept {kept}",
            peer_fingerprint=peer.fingerprint, peer_name=peer.name))

    def key_alarms(self) -> list[KeyAlarm]:
        """The peers whose key signed two different rotations (see :class:`KeyAlarm`);
        a peer's mark goes when it is unpaired."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT a.peer_fingerprint, a.kept_successor, a.other_successor,"
                    " a.seen_at FROM key_alarms a JOIN peers p"
                    " ON p.fingerprint = a.peer_fingerprint ORDER BY a.seen_at").fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return [KeyAlarm(peer_fingerprint=p, kept_successor=k, other_successor=o, seen_at=s)
                for p, k, o, s in rows]

    def admit(self, fingerprint_: str, *, at: float | None = None) -> Peer | None:
        """Return the peer a connection's certificate belongs to, completing a rotation.

        A pending successor's first connection makes it the peer's only certificate
        (one transaction, durable): the old certificate is trusted no more. A successor
        whose names another peer holds (possible only in a store older than the
        identity index) is not completed: None, and the refusal is logged.

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
                try:
                    peer = self._complete(row[0], fingerprint_, row[1], at)
                except CertificateRefused as refused:
                    with self._db:
                        events_sql.insert_event(self._db, Event(
                            at=iso_time(time.time() if at is None else at), kind="rotation",
                            role="peer", remote="", mode="", outcome="refused",
                            reason=f"successor {fingerprint_} not completed: {refused}",
                            peer_fingerprint=row[0]))
                    return None
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
            self._db.execute("UPDATE OR REPLACE rotation_told SET peer_fingerprint = ?"
                             " WHERE peer_fingerprint = ?", (new_fp, old_fp))
            self._db.execute("UPDATE key_alarms SET peer_fingerprint = ?"
                             " WHERE peer_fingerprint = ?", (new_fp, old_fp))
            # The owner moves to the new fingerprint, then holds the new certificate's
            # keys only (the old certificate's go with it).
            for table in ("identity_keys", "peer_names"):
                self._db.execute(f"UPDATE {table} SET owner = ? WHERE owner = ?",  # noqa: S608
                                 (new_fp, old_fp))
            keys_sql.rekey(self._db, new_fp)
            events_sql.insert_event(self._db, Event(
                at=when, kind="rotation", role="peer", remote="", mode=old.mode,
                outcome="completed", reason=f"was {old_fp}", peer_fingerprint=new_fp,
                peer_name=old.name))
        return dataclasses.replace(old, fingerprint=new_fp, cert_der=cert_der)

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
