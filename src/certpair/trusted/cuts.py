"""Cutting the open connections of a device that is no longer paired.

A context refuses an unpaired device from its next handshake; a connection opened
before the unpairing (an HTTP keep-alive, a long download) would go on. The servers of
:mod:`certpair.trusted.streams` and :mod:`certpair.trusted.server` register each open
connection here; one daemon thread per server reads the store's ``peers_version`` every
:data:`POLL_INTERVAL` seconds (one indexed query) and, when it moved, asks the store
about each open connection's peer and cuts those it no longer holds. A peer that
rotated its key is the same device and stays.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from certpair.errors import CertpairError
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted.contexts import NotPaired

__all__ = ["POLL_INTERVAL", "OpenConnections"]

POLL_INTERVAL = 0.1

Cut = Callable[[NotPaired], None]


class OpenConnections:
    """The open connections of one server, each with its peer and how to cut it."""

    def __init__(self, store: Path | TrustStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._open: dict[int, tuple[Peer, Cut]] = {}
        self._next = 0

    @contextlib.contextmanager
    def track(self, peer: Peer, cut: Cut) -> Iterator[None]:
        """Make one connection cuttable while the ``with`` block runs."""
        with self._lock:
            key = self._next = self._next + 1
            self._open[key] = (peer, cut)
        try:
            yield
        finally:
            with self._lock:
                self._open.pop(key, None)

    def start_polling(self, running: Callable[[], bool]) -> None:
        """Watch the store in a daemon thread for as long as ``running()`` is true."""
        threading.Thread(target=self._poll, args=(running,), name="certpair-cuts",
                         daemon=True).start()

    def _poll(self, running: Callable[[], bool]) -> None:
        stopping = threading.Event()
        try:
            store = self._store if isinstance(self._store, TrustStore) else open_store(
                self._store)
        except CertpairError:
            return  # the handshakes fail closed on an unusable store
        version = -1
        while running() and not stopping.wait(POLL_INTERVAL):
            try:
                now = store.peers_version()
                if now != version:
                    version = now  # read first: a racing change shows up next time
                    self.cut_unpaired(store)
            except CertpairError:
                continue  # the store may come back; the handshakes fail closed meanwhile
        if store is not self._store:
            store.close()

    def cut_unpaired(self, store: TrustStore) -> int:
        """Cut every open connection whose peer the store no longer holds; how many."""
        with self._lock:
            entries = list(self._open.values())
        doomed = [(peer, cut) for peer, cut in entries if not _still_paired(store, peer)]
        for peer, cut in doomed:
            cut(NotPaired(f"{peer.name} ({peer.fingerprint}) was unpaired"))
        return len(doomed)


def _still_paired(store: TrustStore, peer: Peer) -> bool:
    """Whether the store still holds ``peer``, under its key or a rotated one."""
    if store.peer(peer.fingerprint) is not None:
        return True
    # A completed rotation replaced the row's fingerprint: follow the chain of keys.
    moved = {s.peer_fingerprint: s.fingerprint for s in store.successors()
             if s.state == "completed"}
    seen = {peer.fingerprint}
    current = peer.fingerprint
    while current in moved and moved[current] not in seen:
        current = moved[current]
        seen.add(current)
        if store.peer(current) is not None:
            return True
    return False
