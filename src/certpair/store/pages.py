"""The store's reads and upkeep that scale with the number of peers: pages of peers,
and the anchor directory that follows them (see :mod:`~certpair.store.anchors`).

A mixin of :class:`~certpair.store.trust.TrustStore`, kept apart so that each module
stays small; it uses the store's connection, lock and error wording.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from certpair.store import peers as peers_sql
from certpair.store.anchors import sync_anchors
from certpair.store.records import Peer, StoreUnusable

__all__ = ["PagedReads"]


class PagedReads:
    """Paged reads of the peers, and the anchor directory's upkeep."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    anchors: Path

    def _read_error(self, exc: sqlite3.Error) -> StoreUnusable:
        raise NotImplementedError

    def _write_error(self, exc: sqlite3.Error) -> StoreUnusable:
        raise NotImplementedError

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

    def _follow_anchors(self) -> None:
        # The change is committed and the store is the truth: a directory that cannot
        # be written now keeps its pending marks, and the next sync_anchors (any open of
        # the store, any trusted context that notices the change) repairs it.
        with contextlib.suppress(StoreUnusable):
            self.sync_anchors()

    def sync_anchors(self) -> int:
        """Bring the anchor directory (``self.anchors``) in line with the peers.

        Returns:
            How many subject-hash buckets were rewritten (0 when nothing was pending).

        Raises:
            StoreUnusable: the store or the directory cannot be written.
        """
        try:
            with self._lock:
                return sync_anchors(self._db, self.anchors)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        except OSError as exc:
            raise StoreUnusable(f"cannot write the anchor directory {self.anchors}: "
                                f"{exc.strerror or exc}") from exc

