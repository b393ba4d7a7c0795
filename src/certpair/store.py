"""The trust store: paired peers and the audit log, in one SQLite file (WAL).

A pairing commits its peer row and its event row in a single transaction, so after
any crash the store holds both or neither.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from certpair.errors import LocalStateError
from certpair.identity import fingerprint

__all__ = ["Event", "Peer", "StoreUnusable", "TrustStore", "open_store"]

_SCHEMA_VERSION = 1
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
"""


class StoreUnusable(LocalStateError):
    """The trust store cannot be opened or is corrupt."""


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
    """One row of the audit log: a pairing attempt or a connection."""

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
    """Peers and events of one device. Use :func:`open_store` to get one."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
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
            with self._db:
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
            with self._db:
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

    def peers(self) -> list[Peer]:
        """Return every trusted peer, oldest pairing first."""
        return list(self._query_peers("", ()))

    def peer(self, fingerprint_: str) -> Peer | None:
        """Return the peer with this fingerprint, or None."""
        found = list(self._query_peers("WHERE fingerprint = ?", (fingerprint_,)))
        return found[0] if found else None

    def _query_peers(self, where: str, args: tuple[str, ...]) -> Iterator[Peer]:
        try:
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
            rows = self._db.execute(
                "SELECT at, kind, role, remote, mode, outcome, reason, peer_fingerprint,"
                " peer_name FROM events ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot read the trust store {self.path}") from exc
        return [
            Event(at=a, kind=k, role=r, remote=rm, mode=m, outcome=o, reason=re,
                  peer_fingerprint=pf, peer_name=pn)
            for a, k, r, rm, m, o, re, pf, pn in rows
        ]


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
        db = sqlite3.connect(path, timeout=10.0, isolation_level="DEFERRED")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreUnusable(f"the trust store {path} is from a newer certpair")
            with db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise StoreUnusable(f"cannot open the trust store {path}") from exc
    return TrustStore(db, path)
