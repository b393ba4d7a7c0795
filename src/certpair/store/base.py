"""What every part of :class:`~certpair.store.TrustStore` stands on: the connection, its
lock, the store's error wording, and the anchor directory that follows each change.

Each job of the store is a class of its own deriving from :class:`StoreBase` (pairing
commits, confirmations, event records, successors, paged reads); ``TrustStore`` joins
them. Every method is defined in exactly one of them — none is a stub that another
class overrides — so the order of the bases decides nothing
(``tests/test_store_split.py``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from certpair.store import peers as peers_sql
from certpair.store.anchors import ANCHORS_DIRECTORY, in_directory, sync_anchors
from certpair.store.failures import describe
from certpair.store.records import Peer, PeerNotFound, StoreUnusable

__all__ = ["StoreBase", "gone"]


class StoreBase:
    """The connection, lock, paths and errors shared by the store's parts.

    One store may be shared between threads: every database call holds the lock.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.path = path
        self.anchors = path.parent / ANCHORS_DIRECTORY

    def __enter__(self) -> Self:
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
        return StoreUnusable(f"cannot write the trust store {self.path}: "
                             f"{describe(exc, self.path.parent)}")

    def _read_error(self, exc: sqlite3.Error) -> StoreUnusable:
        return StoreUnusable(f"cannot read the trust store {self.path}: "
                             f"{describe(exc, self.path.parent)}")

    def _select(self, where: str, args: tuple[str, ...]) -> list[Peer]:
        try:
            with self._lock:
                return peers_sql.select_peers(self._db, where, args)
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def _one(self, fingerprint_: str) -> Peer:
        found = self._select("WHERE fingerprint = ?", (fingerprint_,))
        if not found:
            raise gone(fingerprint_)
        return found[0]

    def peer(self, fingerprint_: str) -> Peer | None:
        """Return the peer with this fingerprint, or None."""
        found = self._select("WHERE fingerprint = ?", (fingerprint_,))
        return found[0] if found else None

    def anchored(self, fingerprint_: str, cert_der: bytes) -> bool:
        """Whether this trusted certificate (a peer's, or a pending successor's) is in
        the anchor directory, so met the peer profile when it was written there
        (:func:`~certpair.store.anchors.in_directory`): one indexed read and a file or
        two, no certificate parsed."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT subject_hash FROM trusted_certs WHERE fingerprint = ?",
                    (fingerprint_,)).fetchone()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return row is not None and in_directory(self.anchors, row[0], cert_der)

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


def gone(fingerprint_: str) -> PeerNotFound:
    """The error for a peer that is not (or no longer) stored."""
    return PeerNotFound(f"no paired device has the fingerprint {fingerprint_}")
