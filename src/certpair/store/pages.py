"""The store's reads: one peer, a query's matches, pages of peers, the change counter
and the audit log. Each read is one bounded query (keyset paging for all peers).

A part of :class:`~certpair.store.trust.TrustStore` (see :mod:`~certpair.store.base`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from certpair.identity import fingerprint
from certpair.store import events as events_sql
from certpair.store import peers as peers_sql
from certpair.store.base import StoreBase
from certpair.store.changes import peers_version
from certpair.store.failures import CORRUPT
from certpair.store.records import AmbiguousPeer, Event, Peer, PeerNotFound, StoreUnusable

__all__ = ["PagedReads"]


class PagedReads(StoreBase):
    """The reads of the peers and of the audit log."""

    def peers_page(self, *, limit: int | None = None, offset: int = 0) -> list[Peer]:
        """Return the page of trusted peers ``limit``/``offset`` selects, oldest pairing
        first (``offset`` costs a walk of that many index entries; see
        :meth:`iter_peers` to read them all)."""
        try:
            with self._lock:
                return peers_sql.select_peers(self._db, "", (), limit=limit, offset=offset)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def iter_peers(self, *, page: int = 500) -> Iterator[Peer]:
        """Yield every trusted peer, oldest pairing first, ``page`` rows per query.

        Memory stays bounded by one page however many peers there are; each page is
        one index seek (keyset paging), and the lock is not held between pages.

        Raises:
            StoreUnusable: a read failed.
        """
        after: tuple[str, str] | None = None
        while True:
            try:
                with self._lock:
                    batch = peers_sql.select_page_after(self._db, after, page)
            except sqlite3.Error as exc:
                raise self._read_error(exc) from exc
            yield from batch
            if len(batch) < page:
                return
            after = (batch[-1].paired_at, batch[-1].fingerprint)

    def unconfirmed_peers(self, *, limit: int = 5) -> list[Peer]:
        """Return up to ``limit`` peers still marked unconfirmed, oldest first (one
        bounded read, whatever the number of peers)."""
        try:
            with self._lock:
                return peers_sql.select_peers(self._db, "WHERE confirmed = 0", (),
                                              limit=limit)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def count_peers(self) -> int:
        """Return how many peers the store holds."""
        try:
            with self._lock:
                return peers_sql.count_peers(self._db)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def peers(self) -> list[Peer]:
        """Return every trusted peer, oldest pairing first (pages: :meth:`peers_page`)."""
        return self._select("", ())

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

    def verify_peers(self) -> int:
        """Check the rows that trust rests on before a command changes trust.

        SQLite's structural check of the peers and successors tables and their indexes
        (``PRAGMA quick_check`` of those tables only: the audit log is not read), then
        every row: its text decodes, its fingerprint is its certificate's. Costs one
        pass over the peers, as pairing and rotation make anyway; never a scan of the
        whole file.

        Returns:
            How many peers were checked.

        Raises:
            StoreUnusable: the store is damaged (the message says where, and what to do).
        """
        try:
            with self._lock:
                for table in ("peers", "successors"):
                    verdict = [row[0] for row in self._db.execute(
                        f"PRAGMA quick_check({table})")]  # constant names
                    if verdict != ["ok"]:
                        raise StoreUnusable(f"the trust store {self.path} is damaged (its "
                                            f"{table} table): {CORRUPT}")
                successors = self._db.execute(
                    "SELECT fingerprint, cert_der FROM successors").fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        for fp, der in successors:
            if not isinstance(der, bytes) or fingerprint(der) != fp:
                raise StoreUnusable(f"the trust store {self.path} is damaged (a peer's "
                                    f"next certificate, {fp}): {CORRUPT}")
        checked = 0
        for peer in self.iter_peers():
            if not peer.intact:
                raise StoreUnusable(
                    f"the trust store {self.path} is damaged: the stored fingerprint of "
                    f"paired device {peer.fingerprint} does not match its certificate; "
                    f"unpair it ('certpair unpair {peer.fingerprint}') and pair it again, "
                    "or restore the store from a backup")
            checked += 1
        return checked
