"""The trust store: paired peers and the audit log, in one SQLite file (WAL).

A pairing commits its peer row and its event row in a single transaction, so after
any crash the store holds both or neither; removing or renaming a peer does the same.

Every change to the peers table, from any process, bumps a counter kept by SQLite
triggers (:meth:`TrustStore.peers_version`), so long-lived readers such as the trusted
TLS contexts can notice a change with one cheap query per connection.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from certpair.errors import BadInput, LocalStateError
from certpair.identity import fingerprint, validate_name

__all__ = [
    "MIN_PREFIX_DIGITS",
    "AmbiguousPeer",
    "Event",
    "Peer",
    "PeerNotFound",
    "StoreUnusable",
    "TrustStore",
    "open_store",
]

# Fewer hex digits than this match too many fingerprints to be a deliberate choice.
MIN_PREFIX_DIGITS = 4
_HEX_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX_DIGITS},64}}")

# 1: peers, events. 2: the peers_version counter and its triggers.
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    fingerprint TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    cert_der    BLOB NOT NULL,
    mode        TEXT NOT NULL,
    paired_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    role        TEXT NOT NULL,
    remote      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    peer_fingerprint TEXT,
    peer_name   TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('peers_version', 0);
CREATE TRIGGER IF NOT EXISTS peers_inserted AFTER INSERT ON peers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
END;
CREATE TRIGGER IF NOT EXISTS peers_updated AFTER UPDATE ON peers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
END;
CREATE TRIGGER IF NOT EXISTS peers_deleted AFTER DELETE ON peers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
END;
"""


class StoreUnusable(LocalStateError):
    """The trust store cannot be opened or is corrupt."""


class PeerNotFound(BadInput):
    """No paired device matches the given name or fingerprint."""


class AmbiguousPeer(BadInput):
    """Several paired devices match the given name or fingerprint prefix."""


@dataclass(frozen=True, kw_only=True)
class Peer:
    """A trusted remote identity."""

    name: str
    fingerprint: str
    cert_der: bytes = field(repr=False)
    mode: str
    paired_at: str


@dataclass(frozen=True, kw_only=True)
class Event:
    """One row of the audit log.

    ``kind`` is ``pairing``, ``connection``, ``unpairing`` or ``rename``.
    """

    at: str
    kind: str
    role: str
    remote: str
    mode: str
    outcome: str
    reason: str
    peer_fingerprint: str | None = None
    peer_name: str | None = None


def _iso(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TrustStore:
    """Peers and events of one device. Use :func:`open_store` to get one.

    One store may be shared between threads: every database call holds a lock.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.path = path

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

    def commit_pairing(
        self, *, name: str, cert_der: bytes, mode: str, role: str, remote: str,
        at: float | None = None,
    ) -> Peer:
        """Trust a peer and log the pairing, in one transaction.

        Re-pairing a known certificate updates its name, mode and time.

        Args:
            name: the name the peer gave.
            cert_der: the peer certificate as observed on the pairing connection.
            mode: the pairing mode used.
            role: this device's role (``offerer`` or ``joiner``).
            remote: the peer's address.
            at: time of pairing (seconds since the epoch); now if omitted.

        Returns:
            The stored peer.

        Raises:
            StoreUnusable: the write failed.
        """
        when = _iso(time.time() if at is None else at)
        peer = Peer(
            name=name, fingerprint=fingerprint(cert_der), cert_der=cert_der, mode=mode,
            paired_at=when,
        )
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE SET"
                    " name = excluded.name, mode = excluded.mode,"
                    " paired_at = excluded.paired_at",
                    (peer.fingerprint, name, cert_der, mode, when),
                )
                self._insert_event(
                    Event(
                        at=when, kind="pairing", role=role, remote=remote, mode=mode,
                        outcome="paired", reason="", peer_fingerprint=peer.fingerprint,
                        peer_name=name,
                    )
                )
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot write the trust store {self.path}") from exc
        return peer

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
            at=_iso(time.time() if at is None else at), kind=kind, role=role, remote=remote,
            mode=mode, outcome=outcome, reason=reason, peer_fingerprint=peer_fingerprint,
            peer_name=peer_name,
        )
        try:
            with self._lock, self._db:
                self._insert_event(event)
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot write the trust store {self.path}") from exc

    def _insert_event(self, event: Event) -> None:
        self._db.execute(
            "INSERT INTO events (at, kind, role, remote, mode, outcome, reason,"
            " peer_fingerprint, peer_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.at, event.kind, event.role, event.remote, event.mode, event.outcome,
                event.reason, event.peer_fingerprint, event.peer_name,
            ),
        )

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
        when = _iso(time.time() if at is None else at)
        try:
            with self._lock, _synchronous_full(self._db), self._db:
                peer = self._one(fingerprint_)
                self._db.execute("DELETE FROM peers WHERE fingerprint = ?", (fingerprint_,))
                self._insert_event(
                    Event(at=when, kind="unpairing", role="local", remote="", mode=peer.mode,
                          outcome="removed", reason="", peer_fingerprint=peer.fingerprint,
                          peer_name=peer.name)
                )
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot write the trust store {self.path}") from exc
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
            PeerNotFound: no peer has this fingerprint.
            StoreUnusable: the write failed.
        """
        validate_name(name)
        when = _iso(time.time() if at is None else at)
        try:
            with self._lock, self._db:
                old = self._one(fingerprint_)
                self._db.execute(
                    "UPDATE peers SET name = ? WHERE fingerprint = ?", (name, fingerprint_)
                )
                self._insert_event(
                    Event(at=when, kind="rename", role="local", remote="", mode=old.mode,
                          outcome="renamed", reason=f"was {old.name}",
                          peer_fingerprint=old.fingerprint, peer_name=name)
                )
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot write the trust store {self.path}") from exc
        return Peer(name=name, fingerprint=old.fingerprint, cert_der=old.cert_der,
                    mode=old.mode, paired_at=old.paired_at)

    def _one(self, fingerprint_: str) -> Peer:
        found = list(self._query_peers("WHERE fingerprint = ?", (fingerprint_,)))
        if not found:
            raise PeerNotFound(f"no paired device has the fingerprint {fingerprint_}")
        return found[0]

    def peers(self) -> list[Peer]:
        """Return every trusted peer, oldest pairing first."""
        return list(self._query_peers("", ()))

    def peer(self, fingerprint_: str) -> Peer | None:
        """Return the peer with this fingerprint, or None."""
        found = list(self._query_peers("WHERE fingerprint = ?", (fingerprint_,)))
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
        digits = query.lower().removeprefix("sha256:").replace(":", "")
        if not _HEX_PREFIX.fullmatch(digits):
            return list(self._query_peers("WHERE name = ?", (query,)))
        # Hex digits only, so the LIKE pattern holds no wildcard but the final one.
        return list(self._query_peers(
            "WHERE name = ? OR fingerprint LIKE ?", (query, f"sha256:{digits}%")
        ))

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
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'peers_version'"
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot read the trust store {self.path}") from exc
        return int(row[0]) if row else 0

    def _query_peers(self, where: str, args: tuple[str, ...]) -> Iterator[Peer]:
        try:
            with self._lock:
                rows = self._db.execute(
                    # `where` is one of this module's literals; values are bound.
                    "SELECT name, fingerprint, cert_der, mode, paired_at FROM peers "  # noqa: S608
                    + where + " ORDER BY paired_at, fingerprint",
                    args,
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot read the trust store {self.path}") from exc
        for name, fp, der, mode, paired_at in rows:
            yield Peer(name=name, fingerprint=fp, cert_der=der, mode=mode, paired_at=paired_at)

    def events(self, *, limit: int | None = None) -> list[Event]:
        """Return logged events, newest first."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT at, kind, role, remote, mode, outcome, reason, peer_fingerprint,"
                    " peer_name FROM events ORDER BY id DESC LIMIT ?",
                    (-1 if limit is None else limit,),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot read the trust store {self.path}") from exc
        return [
            Event(at=a, kind=k, role=r, remote=rm, mode=m, outcome=o, reason=re_,
                  peer_fingerprint=pf, peer_name=pn)
            for a, k, r, rm, m, o, re_, pf, pn in rows
        ]


@contextlib.contextmanager
def _synchronous_full(db: sqlite3.Connection) -> Iterator[None]:
    """Make the commits inside durable on disk before they return."""
    db.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        db.execute("PRAGMA synchronous=NORMAL")


def open_store(home: Path) -> TrustStore:
    """Open (creating if needed) the trust store ``home/trust.db``.

    Args:
        home: certpair's home directory; it must exist.

    Returns:
        The open store.

    Raises:
        StoreUnusable: the file cannot be opened, is not a certpair store, or is newer
            than this version understands.
    """
    path = home / "trust.db"
    try:
        # The store serialises its own calls with a lock, so any thread may use it.
        db = sqlite3.connect(path, timeout=10.0, isolation_level="DEFERRED",
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: every commit is atomic and survives a process crash; only
            # a power loss may roll back the latest commits (never half of one).
            # Removals of trust run with FULL (see remove_peer), so they always last.
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreUnusable(f"the trust store {path} is from a newer certpair")
            if version < _SCHEMA_VERSION:
                with db:
                    db.executescript(_SCHEMA)
                    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise StoreUnusable(f"cannot open the trust store {path}") from exc
    return TrustStore(db, path)
