"""The address book: per peer, where it was last reached or announced (structured fields).

Each row is one :class:`~certpair.reach.PeerAddress` of one peer: transport kind, host,
port (0: the host only), service (``serve``, ``tunnel`` or empty), how it was learned
(``contact``, ``announced``, ``pairing``, ``given``) and when it was last seen. Rows come
from pairing, from every trusted connection in either direction, and from DNS-SD
announcements that carry the peer's fingerprint; :func:`certpair.reach.candidates`
orders them. A peer keeps at most :data:`MAX_PER_PEER` rows (the oldest go), so
announcements cannot grow the book without bound. Rows go with their peer.

Rows are keyed by the peer's device id (``store/devices.py``), so a key rotation keeps
them: the device is where it was, whatever certificate it presents now.
"""

from __future__ import annotations

import datetime
import ipaddress
import sqlite3
import time
from collections.abc import Sequence

from certpair.addresses import format_address, parse_address
from certpair.errors import BadInput
from certpair.reach import CONTACT, DIRECT, HOST_ONLY, PAIRING, SERVE, PeerAddress
from certpair.store import events as events_sql
from certpair.store.base import StoreBase
from certpair.store.records import Event, Peer

__all__ = ["MAX_PER_PEER", "MIGRATION_ADDRESS_BOOK", "AddressBook", "book_key",
           "insert_address", "now", "pairing_address"]

MAX_PER_PEER = 16

# Schema step 10: the address book; the addresses of step 5's peer_addresses (each
# peer's serve, as last reached) move into it, under the peer's device id (step 8), and
# that table goes.
MIGRATION_ADDRESS_BOOK = """
CREATE TABLE address_book (
    peer     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    host     TEXT NOT NULL,
    port     INTEGER NOT NULL,
    service  TEXT NOT NULL,
    source   TEXT NOT NULL,
    seen_at  TEXT NOT NULL,
    PRIMARY KEY (peer, kind, host, port, service)
);
INSERT OR IGNORE INTO address_book (peer, kind, host, port, service, source, seen_at)
    SELECT p.device_id, 'direct',
        CASE WHEN a.address LIKE '[%' THEN substr(a.address, 2, instr(a.address, ']') - 2)
             ELSE substr(a.address, 1, instr(a.address, ':') - 1) END,
        CAST(CASE WHEN a.address LIKE '[%' THEN substr(a.address, instr(a.address, ']:') + 2)
             ELSE substr(a.address, instr(a.address, ':') + 1) END AS INTEGER),
        'serve', 'contact', a.seen_at
    FROM peer_addresses a JOIN peers p ON p.fingerprint = a.peer_fingerprint
    WHERE instr(a.address, ':') > 0 AND p.device_id IS NOT NULL;
DROP TRIGGER IF EXISTS peers_deleted_successors;
CREATE TRIGGER peers_deleted_successors AFTER DELETE ON peers BEGIN
    DELETE FROM successors WHERE peer_fingerprint = old.fingerprint AND state = 'pending';
    DELETE FROM address_book WHERE peer = old.device_id;
END;
DROP TABLE peer_addresses;
"""


def book_key(db: sqlite3.Connection, peer: Peer | str) -> str | None:
    """The key of a peer's rows: its device id (looked up by fingerprint when the
    record has none, or for a fingerprint), or None if it is not paired."""
    if isinstance(peer, Peer) and peer.device_id:
        return peer.device_id
    fingerprint = peer if isinstance(peer, str) else peer.fingerprint
    row = db.execute("SELECT device_id FROM peers WHERE fingerprint = ?",
                     (fingerprint,)).fetchone()
    return None if row is None else str(row[0])


def insert_address(db: sqlite3.Connection, peer: Peer | str, address: PeerAddress) -> None:
    """Upsert one row for ``peer`` (in the caller's transaction; nothing for a peer not
    paired), then drop its oldest rows beyond :data:`MAX_PER_PEER`."""
    key = book_key(db, peer)
    if key is None:
        return
    db.execute(
        "INSERT INTO address_book (peer, kind, host, port, service, source, seen_at)"
        " SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM peers WHERE device_id = ?)"
        " ON CONFLICT (peer, kind, host, port, service) DO UPDATE"
        " SET source = excluded.source, seen_at = excluded.seen_at",
        (key, address.kind, address.host, address.port or 0,
         address.service if address.port else HOST_ONLY, address.source, address.seen_at,
         key))
    db.execute(
        "DELETE FROM address_book WHERE peer = ? AND rowid NOT IN (SELECT rowid"
        " FROM address_book WHERE peer = ? ORDER BY seen_at DESC LIMIT ?)",
        (key, key, MAX_PER_PEER))


def pairing_address(remote: str, at: float | None = None) -> PeerAddress | None:
    """The host a pairing's ``remote`` names, as a book entry; None unless it is an IP
    address (the source address of the connection, or one the user typed)."""
    try:
        host, _ = parse_address(remote, 0)
        ipaddress.ip_address(host.split("%", 1)[0])
    except (BadInput, ValueError):
        return None
    return PeerAddress(host=host, port=None, service=HOST_ONLY, source=PAIRING,
                       seen_at=now(at))


def now(at: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC)
    return moment.isoformat(timespec="microseconds")


class AddressBook(StoreBase):
    """Where peers were reached or announced. A part of
    :class:`~certpair.store.trust.TrustStore` (see :mod:`~certpair.store.base`)."""

    def note_address(self, peer: Peer | str, host: str, port: int | None = None, *,
                     service: str = HOST_ONLY, source: str = CONTACT, kind: str = DIRECT,
                     at: float | None = None) -> None:
        """Remember that ``peer`` was reached or announced at ``host`` (``port`` of its
        ``service``; None: the host only). Nothing is stored for a peer no longer paired.

        Raises:
            StoreUnusable: the write failed.
        """
        entry = PeerAddress(host=host, port=port, service=service, source=source, kind=kind,
                            seen_at=now(at))
        try:
            with self._lock, self._db:
                insert_address(self._db, peer, entry)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def record_contacts(self, events: Sequence[Event], hosts: Sequence[tuple[Peer, str]],
                        *, at: float | None = None) -> None:
        """Append a batch of connection rows and remember the hosts peers connected from
        (an incoming connection's port says nothing about the peer's services), in one
        transaction: a busy server commits once per batch.

        Raises:
            StoreUnusable: the write failed (nothing is written).
        """
        when = now(at)
        try:
            with self._lock, self._db:
                for event in events:
                    events_sql.insert_event(self._db, event)
                for peer, host in hosts:
                    insert_address(self._db, peer, PeerAddress(
                        host=host, port=None, service=HOST_ONLY, source=CONTACT,
                        seen_at=when))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def address_book(self, peer: Peer | str) -> list[PeerAddress]:
        """Every address of ``peer`` in the book, newest first."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT kind, host, port, service, source, seen_at FROM address_book"
                    " WHERE peer = ? ORDER BY seen_at DESC",
                    (book_key(self._db, peer),)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return [PeerAddress(kind=k, host=h, port=p or None, service=s, source=src, seen_at=at)
                for k, h, p, s, src, at in rows]

    def changed_elsewhere(self) -> int:
        """A number that moves whenever another connection to this store (another
        process, another :class:`TrustStore`) commits a change: SQLite's
        ``data_version``, which reads no table. A long-running reader of the address
        book reads it again only when this moved (or it wrote itself).

        Raises:
            StoreUnusable: the read failed.
        """
        try:
            with self._lock:
                return int(self._db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def remember_address(self, peer_fingerprint: str, address: str,
                         *, at: float | None = None) -> None:
        """Remember where a peer's ``serve`` answered (``HOST:PORT``)."""
        host, port = parse_address(address, None)
        self.note_address(peer_fingerprint, host, port, service=SERVE, at=at)

    def addresses(self) -> dict[str, str]:
        """Where each peer's ``serve`` was last reached (``HOST:PORT``), by fingerprint."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT p.fingerprint, a.host, a.port FROM address_book a"
                    " JOIN peers p ON p.device_id = a.peer WHERE a.service = ?"
                    " AND a.source = ? ORDER BY a.seen_at", (SERVE, CONTACT)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return {peer: format_address(host, port) for peer, host, port in rows}
