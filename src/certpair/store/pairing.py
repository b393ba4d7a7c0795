"""Pairing commits: trusting a peer, undoing, removing and renaming it, each with its
audit-log row and its identity keys in one transaction.

A part of :class:`~certpair.store.trust.TrustStore` (see :mod:`~certpair.store.base`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time

from certpair.identity import fingerprint
from certpair.names import check_name
from certpair.profile import certificate_keys
from certpair.store import events as events_sql
from certpair.store import identity_keys as keys_sql
from certpair.store import peers as peers_sql
from certpair.store.address_book import insert_address, pairing_address
from certpair.store.base import StoreBase, gone
from certpair.store.changes import synchronous_full
from certpair.store.records import Event, Peer, iso_time

__all__ = ["PairingCommit", "PairingCommits"]


@dataclasses.dataclass(frozen=True)
class PairingCommit:
    """What :meth:`PairingCommits.commit_pairing_result` stored: the peer, and whether its
    row is new (False: a certificate already trusted was paired again)."""

    peer: Peer
    created: bool


class PairingCommits(StoreBase):
    """The changes of who is trusted, other than rotation."""

    def commit_pairing(
        self, *, name: str, cert_der: bytes, mode: str, role: str, remote: str,
        at: float | None = None, confirmed: bool = True,
    ) -> Peer:
        """Trust a peer and log the pairing, in one transaction (as
        :meth:`commit_pairing_result`, which also says whether the peer is new).

        Returns:
            The stored peer.
        """
        return self.commit_pairing_result(name=name, cert_der=cert_der, mode=mode, role=role,
                                          remote=remote, at=at, confirmed=confirmed).peer

    def commit_pairing_result(
        self, *, name: str, cert_der: bytes, mode: str, role: str, remote: str,
        at: float | None = None, confirmed: bool = True,
    ) -> PairingCommit:
        """Trust a peer and log the pairing, in one transaction.

        Re-pairing a known certificate updates its name, mode, time and confirmation.
        A name that reads the same as another paired device's (equal, or a look-alike)
        is stored as ``name (2)`` (then 3…), and the returned peer's ``given_name`` holds
        the name the peer gave. The certificate's subject and names are written to the
        identity index in the same transaction: a certificate carrying another peer's
        (or another peer's pending successor's) is refused here, whatever the checks
        before said — two pairings racing cannot both be stored.

        Args:
            name: the name the peer gave.
            cert_der: the peer certificate as observed on the pairing connection.
            mode: the pairing mode used.
            role: this device's role (``offerer`` or ``joiner``).
            remote: the peer's address.
            at: time of pairing (seconds since the epoch); now if omitted.
            confirmed: False while the peer's own commit is not known (it is stored,
                and trusted, all the same; see :meth:`confirm_peer`).

        Returns:
            The stored peer, and whether it is new: decided inside the transaction, so
            that a caller that undoes a new pairing never removes one another process
            stored meanwhile.

        Raises:
            CertificateRefused: rule ``NAME_COLLISION`` (nothing stored).
            StoreUnusable: the write failed.
        """
        when = iso_time(time.time() if at is None else at)
        fingerprint_ = fingerprint(cert_der)
        try:
            # FULL: the peer is told next that this device stored it; a power loss
            # must not take that back. IMMEDIATE: the name chosen is still free when the
            # row is written, whichever process writes next.
            with self._lock, synchronous_full(self._db), self._db:
                self._db.execute("BEGIN IMMEDIATE")
                stored = peers_sql.distinct_name(self._db, name, fingerprint_)
                peer = Peer(
                    name=stored, fingerprint=fingerprint_, cert_der=cert_der, mode=mode,
                    paired_at=when, confirmed=confirmed,
                    given_name=None if stored == name else name,
                )
                device_id, created = peers_sql.upsert_peer(self._db, peer)
                peer = dataclasses.replace(peer, device_id=device_id)
                keys_sql.rekey(self._db, fingerprint_)
                if (address := pairing_address(remote, at)) is not None:
                    insert_address(self._db, fingerprint_, address)
                notes = ([] if confirmed else ["unconfirmed"]) + (
                    [] if stored == name else [f"name {name!r} taken; stored as {stored!r}"])
                events_sql.insert_event(self._db, Event(
                    at=when, kind="pairing", role=role, remote=remote, mode=mode,
                    outcome="paired", reason="; ".join(notes),
                    peer_fingerprint=peer.fingerprint, peer_name=stored,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        self._follow_anchors()
        return PairingCommit(peer=peer, created=created)

    def colliding_peer(self, cert_der: bytes) -> str | None:
        """The fingerprint of another peer whose certificate or pending successor shares
        a subject or name with ``cert_der``, or None: a few index seeks, however many
        peers are stored (the pairing handshake's early check).

        Raises:
            CertificateRefused: ``cert_der`` cannot be parsed.
            StoreUnusable: the read failed.
        """
        keys = certificate_keys(cert_der)
        try:
            with self._lock:
                return keys_sql.collision(self._db, keys, fingerprint(cert_der))
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def undo_pairing(self, fingerprint_: str, *, remote: str, reason: str,
                     at: float | None = None) -> bool:
        """Remove a peer whose pairing the peer itself refused to store, and log it.

        Args:
            fingerprint_: the peer's full fingerprint.
            remote: the peer's address.
            reason: why (the peer's store failed).
            at: time of the change (seconds since the epoch); now if omitted.

        Returns:
            Whether a row went.

        Raises:
            StoreUnusable: the write failed.
        """
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, synchronous_full(self._db), self._db:
                peer = self.peer(fingerprint_)
                if peer is None or not peers_sql.delete_peer(self._db, fingerprint_):
                    return False
                events_sql.insert_event(self._db, Event(
                    at=when, kind="pairing", role="local", remote=remote, mode=peer.mode,
                    outcome="undone", reason=reason, peer_fingerprint=peer.fingerprint,
                    peer_name=peer.name,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        self._follow_anchors()
        return True

    def remove_peer(self, fingerprint_: str, *, at: float | None = None) -> Peer:
        """Stop trusting a peer and log it, in one transaction.

        Args:
            fingerprint_: the peer's full fingerprint.
            at: time of removal (seconds since the epoch); now if omitted.

        Returns:
            The peer as it was stored.

        Raises:
            PeerNotFound: no peer has this fingerprint.
            StoreUnusable: the write failed.
        """
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, synchronous_full(self._db), self._db:
                peer = self._one(fingerprint_)
                if not peers_sql.delete_peer(self._db, fingerprint_):
                    raise gone(fingerprint_)
                events_sql.insert_event(self._db, Event(
                    at=when, kind="unpairing", role="local", remote="", mode=peer.mode,
                    outcome="removed", reason="", peer_fingerprint=peer.fingerprint,
                    peer_name=peer.name,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        self._follow_anchors()
        return peer

    def rename_peer(self, fingerprint_: str, name: str, *, at: float | None = None) -> Peer:
        """Give a peer a new local name and log it, in one transaction.

        Args:
            fingerprint_: the peer's full fingerprint.
            name: the new name (1 to 64 bytes of UTF-8, no control characters).
            at: time of the change (seconds since the epoch); now if omitted.

        Returns:
            The renamed peer.

        Raises:
            BadInput: the name is not acceptable.
            PeerNotFound: no peer has this fingerprint (also when it was removed while
                this call ran: the rename acts on the row, never on a stale read).
            StoreUnusable: the write failed.
        """
        check_name(name)
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                old = self._one(fingerprint_)
                if not peers_sql.update_name(self._db, fingerprint_, name):
                    raise gone(fingerprint_)
                keys_sql.set_name(self._db, fingerprint_, name)
                events_sql.insert_event(self._db, Event(
                    at=when, kind="rename", role="local", remote="", mode=old.mode,
                    outcome="renamed", reason=f"was {old.name}",
                    peer_fingerprint=old.fingerprint, peer_name=name,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        return dataclasses.replace(old, name=name)
