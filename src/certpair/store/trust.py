"""The trust store object: one lock, one transaction per change, one error type.

Each public change writes its table rows and its audit-log row in a single SQLite
transaction; the SQL itself lives in :mod:`~certpair.store.peers` and
:mod:`~certpair.store.events`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

from certpair.identity import fingerprint, validate_name
from certpair.store import events as events_sql
from certpair.store import peers as peers_sql
from certpair.store.anchors import ANCHORS_DIRECTORY
from certpair.store.changes import peers_version, synchronous_full
from certpair.store.failures import describe
from certpair.store.pages import PagedReads
from certpair.store.records import (
    AmbiguousPeer,
    Event,
    Peer,
    PeerNotFound,
    StoreUnusable,
    iso_time,
)
from certpair.store.successors import SuccessorsMixin

__all__ = ["TrustStore"]


class TrustStore(PagedReads, SuccessorsMixin):
    """Peers and events of one device. Use :func:`~certpair.store.open_store` to get one.

    One store may be shared between threads: every database call holds a lock.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.path = path
        self.anchors = path.parent / ANCHORS_DIRECTORY

    def __enter__(self) -> TrustStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _write_error(self, exc: sqlite3.Error) -> StoreUnusable:
        return StoreUnusable(f"cannot write the trust store {self.path}: {describe(exc)}")

    def _read_error(self, exc: sqlite3.Error) -> StoreUnusable:
        return StoreUnusable(f"cannot read the trust store {self.path}: {describe(exc)}")

    def commit_pairing(
        self, *, name: str, cert_der: bytes, mode: str, role: str, remote: str,
        at: float | None = None, confirmed: bool = True,
    ) -> Peer:
        """Trust a peer and log the pairing, in one transaction.

        Re-pairing a known certificate updates its name, mode, time and confirmation.
        A name that reads the same as another paired device's is stored as ``name (2)``
        (then 3…), and the returned peer's ``given_name`` holds the name the peer gave.

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
            The stored peer.

        Raises:
            StoreUnusable: the write failed.
        """
        when = iso_time(time.time() if at is None else at)
        fingerprint_ = fingerprint(cert_der)
        try:
            # FULL: the peer is told next that this device stored it; a power loss
            # must not take that back.
            with self._lock, synchronous_full(self._db), self._db:
                stored = peers_sql.distinct_name(self._db, name, fingerprint_)
                peer = Peer(
                    name=stored, fingerprint=fingerprint_, cert_der=cert_der, mode=mode,
                    paired_at=when, confirmed=confirmed,
                    given_name=None if stored == name else name,
                )
                peers_sql.upsert_peer(self._db, peer)
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
        return peer

    def confirm_peer(self, fingerprint_: str, *, remote: str, reason: str,
                     at: float | None = None) -> bool:
        """Mark an unconfirmed peer confirmed (it showed it trusts this device) and log it.

        Args:
            fingerprint_: the peer's full fingerprint.
            remote: the peer's address.
            reason: how it showed it (its COMMITTED frame, a trusted connection).
            at: time of the change (seconds since the epoch); now if omitted.

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
                events_sql.insert_event(self._db, Event(
                    at=when, kind="pairing", role="local", remote=remote, mode=peer.mode,
                    outcome="confirmed", reason=reason, peer_fingerprint=peer.fingerprint,
                    peer_name=peer.name,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        return True

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

    def record_event(
        self, *, kind: str, role: str, remote: str, mode: str, outcome: str, reason: str,
        peer_fingerprint: str | None = None, peer_name: str | None = None,
        at: float | None = None,
    ) -> None:
        """Append an event that trusts nobody (a failure, a refusal, a connection).

        Raises:
            StoreUnusable: the write failed.
        """
        event = Event(
            at=iso_time(time.time() if at is None else at), kind=kind, role=role,
            remote=remote, mode=mode, outcome=outcome, reason=reason,
            peer_fingerprint=peer_fingerprint, peer_name=peer_name,
        )
        try:
            with self._lock, self._db:
                events_sql.insert_event(self._db, event)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def record_refusal(
        self, *, kind: str, role: str, remote: str, reason: str, mode: str,
        outcome: str = "refused", count: int = 1, at: float | None = None,
    ) -> None:
        """Count ``count`` refusals of unauthenticated traffic from ``remote`` (its port,
        if any, is dropped): one row per source host, reason and minute, counted up.

        Raises:
            StoreUnusable: the write failed.
        """
        event = Event(
            at=iso_time(time.time() if at is None else at), kind=kind, role=role,
            remote=events_sql.host_of(remote), mode=mode, outcome=outcome, reason=reason,
            count=count,
        )
        try:
            with self._lock, self._db:
                events_sql.add_refusal(self._db, event)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

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
                    raise _gone(fingerprint_)
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
        validate_name(name)
        when = iso_time(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                old = self._one(fingerprint_)
                if not peers_sql.update_name(self._db, fingerprint_, name):
                    raise _gone(fingerprint_)
                events_sql.insert_event(self._db, Event(
                    at=when, kind="rename", role="local", remote="", mode=old.mode,
                    outcome="renamed", reason=f"was {old.name}",
                    peer_fingerprint=old.fingerprint, peer_name=name,
                ))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        return Peer(name=name, fingerprint=old.fingerprint, cert_der=old.cert_der,
                    mode=old.mode, paired_at=old.paired_at)

    def _one(self, fingerprint_: str) -> Peer:
        found = self._select("WHERE fingerprint = ?", (fingerprint_,))
        if not found:
            raise _gone(fingerprint_)
        return found[0]

    def _select(self, where: str, args: tuple[str, ...]) -> list[Peer]:
        try:
            with self._lock:
                return peers_sql.select_peers(self._db, where, args)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def peers(self) -> list[Peer]:
        """Return every trusted peer, oldest pairing first (pages: :meth:`peers_page`)."""
        return self._select("", ())

    def peer(self, fingerprint_: str) -> Peer | None:
        """Return the peer with this fingerprint, or None."""
        found = self._select("WHERE fingerprint = ?", (fingerprint_,))
        return found[0] if found else None

    def find_peers(self, query: str) -> list[Peer]:
        """Return the peers named ``query`` or whose fingerprint starts with it.

        A fingerprint prefix is at least :data:`MIN_PREFIX_DIGITS` hex digits, with or
        without the ``sha256:`` tag, in either case, colons allowed (as OpenSSL prints).

        Args:
            query: a peer name, a full fingerprint or a fingerprint prefix.

        Returns:
            Every match, oldest pairing first; empty if none.

        Raises:
            StoreUnusable: the read failed.
        """
        return self._select(*peers_sql.selection_for_query(query))

    def find_peer(self, query: str) -> Peer:
        """Return the one peer that ``query`` names (see :meth:`find_peers`).

        Args:
            query: a peer name, a full fingerprint or a fingerprint prefix.

        Returns:
            The only matching peer.

        Raises:
            PeerNotFound: nothing matches.
            AmbiguousPeer: several peers match; a longer prefix tells them apart.
            StoreUnusable: the read failed.
        """
        found = self.find_peers(query)
        exact = [p for p in found if p.fingerprint == query]
        if exact:
            return exact[0]
        if not found:
            raise PeerNotFound(f"no paired device is called or starts with {query!r}")
        if len(found) > 1:
            listed = ", ".join(f"{p.name} {p.fingerprint[:19]}" for p in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise AmbiguousPeer(
                f"{query!r} matches {len(found)} paired devices ({listed}{more}); "
                "give more of the fingerprint"
            )
        return found[0]

    def peers_version(self) -> int:
        """Return a counter that grows with every change to the peers, from any process.

        Raises:
            StoreUnusable: the read failed.
        """
        try:
            with self._lock:
                return peers_version(self._db)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def events(self, *, limit: int | None = None, offset: int = 0) -> list[Event]:
        """Return logged events, newest first: all, or the page ``limit``/``offset``
        selects."""
        try:
            with self._lock:
                return events_sql.select_events(self._db, limit, offset)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc


def _gone(fingerprint_: str) -> PeerNotFound:
    return PeerNotFound(f"no paired device has the fingerprint {fingerprint_}")
