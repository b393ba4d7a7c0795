"""Where ``tunnel connect`` finds PEER: ``--to``, else the address book, else DNS-SD.

Without ``--to``, PEER's addresses come from the address book (where PEER's tunnel was
reached or announced, then the hosts it was seen on: pairing, incoming connections, its
``serve``), in the order :func:`certpair.reach.candidates` decides, and each connection
races them (``trusted/dial.py``). When the book holds nothing, a DNS-SD lookup of PEER's
``tunnel serve`` (:mod:`certpair.announce`) runs once at start
(:func:`far_end_candidates`). Whatever answers must still present PEER's certificate.

While it runs, :class:`PeerRoute` follows PEER: one DNS-SD browse stays open for the
life of the command and notes each announcement of PEER's tunnel (under its current key
or a pending successor) in the address book the moment it is heard; each new
connection takes PEER's addresses from the book, read again when this run changed it
or when another process committed to the store since (SQLite's ``data_version``, one
statement that reads no table: another command's finds, ``ping``, an incoming
connection). So after PEER moves and restarts its ``tunnel serve``, the next
connection goes to the new address first, without a failed connection before it and
without a restart. The browse is raced with the book's addresses only while PEER has
not been heard of, and no connection has reached it yet or the last one failed (a race
with a lookup costs an event loop: docs/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from certpair.addresses import format_address, parse_address
from certpair.errors import BadInput, CertpairError
from certpair.ports import TUNNEL_PORT
from certpair.reach import ANNOUNCED, TUNNEL, Candidate, candidates
from certpair.store import Peer, TrustStore
from certpair.trusted.dial import Discover
from certpair.trusted.routes import announced, fingerprints_of, route

if TYPE_CHECKING:
    from certpair.browsing import Browser, Sighting

__all__ = ["TO", "PeerRoute", "far_end_candidates", "resolve_far_end"]

TO = "--to"  # the source of an address the user gave


class PeerRoute:
    """PEER's addresses for each new connection of a running ``tunnel connect``, and
    the DNS-SD browse that keeps them current (see the module docs)."""

    def __init__(self, store: TrustStore, peer: Peer, *, discovery_timeout: float,
                 interfaces: Sequence[str] = (),
                 on_announced: Callable[[tuple[str, ...]], None] = lambda _: None) -> None:
        """Describe it; nothing is browsed before :meth:`start`.

        Args:
            store: the trust store (the address book).
            peer: PEER (held by its device id: its rotations change nothing here).
            discovery_timeout: seconds a connection may wait for PEER's first
                announcement when nothing is known of it (0: no browse at all).
            interfaces: IPv4 addresses of the interfaces to browse; empty: all.
            on_announced: told the addresses of each new announcement of PEER.
        """
        self.store, self.peer = store, peer
        self.discovery_timeout, self.interfaces = discovery_timeout, interfaces
        self.on_announced = on_announced
        self._lock = threading.Lock()
        self._book: list[Candidate] = []
        self._version = -1
        self._dirty = True
        self._failed = True  # until a connection reaches PEER
        self._heard: set[tuple[str, ...]] = set()
        self._fingerprints = fingerprints_of(store, peer)
        self._browser: Browser | None = None

    def start(self) -> None:
        """Start the browse (unless ``discovery_timeout`` is 0); without multicast DNS
        the address book alone is used."""
        if self.discovery_timeout <= 0:
            return
        from certpair.announce import TUNNEL_SERVICE_TYPE  # noqa: PLC0415
        from certpair.browsing import Browser  # noqa: PLC0415  # zeroconf loads slowly

        browser = Browser(TUNNEL_SERVICE_TYPE, interfaces=self.interfaces,
                          on_seen=self._on_seen)
        if browser.start() is None:
            self._browser = browser

    def close(self) -> None:
        """Stop the browse; idempotent."""
        browser, self._browser = self._browser, None
        if browser is not None:
            browser.close()

    def _on_seen(self, seen: Sighting) -> None:
        """An announcement (in the browser's thread): PEER's goes into the book."""
        fingerprints = fingerprints_of(self.store, self.peer)  # its keys now
        if seen.fingerprint not in fingerprints:
            return
        for host in seen.addresses:
            with contextlib.suppress(CertpairError):  # the address book is only a hint
                self.store.note_address(self.peer, host, seen.port, service=TUNNEL,
                                        source=ANNOUNCED)
        shown = tuple(format_address(host, seen.port) for host in seen.addresses)
        with self._lock:
            self._fingerprints, self._dirty = fingerprints, True
            new = shown not in self._heard
            self._heard.add(shown)
        if new:
            self.on_announced(shown)

    def changed(self) -> None:
        """This run wrote to PEER's addresses: the next connection reads them again."""
        with self._lock:
            self._dirty = True

    def ended(self, *, reached: bool) -> None:
        """Whether the last connection reached PEER (one that did not looks again)."""
        with self._lock:
            self._failed = not reached

    def plan(self) -> tuple[list[Candidate], Discover | None]:
        """The addresses for the next connection, in order, and the lookup to race with
        them (None: none, see the module docs).

        Raises:
            StoreUnusable: the address book cannot be read (the first time only: later,
                what was read last is used).
        """
        with self._lock:
            dirty, heard, failed = self._dirty, bool(self._heard), self._failed
            fingerprints = set(self._fingerprints)
        try:
            version = self.store.changed_elsewhere()
            if dirty or version != self._version:
                with self._lock:
                    self._dirty = False  # a write from now on is read next time
                book = candidates(self.store.address_book(self.peer), service=TUNNEL,
                                  default_port=TUNNEL_PORT)
                with self._lock:
                    self._book, self._version = book, version
        except CertpairError:
            if not self._book:
                raise
        browser = self._browser
        if browser is None or heard or not failed:
            return list(self._book), None

        def lookup(stop: threading.Event) -> list[Candidate]:
            found = browser.find(fingerprints, timeout=self.discovery_timeout, stop=stop)
            return [Candidate(host=host, port=port, source=ANNOUNCED) for host, port in found]

        return list(self._book), lookup


def far_end_candidates(
    store: TrustStore, peer: Peer, to: str | None, *, discovery_timeout: float = 0.0,
    interfaces: Sequence[str] = (),
) -> tuple[list[Candidate], Discover | None]:
    """Where to reach ``peer``'s ``tunnel serve``, in order, and the DNS-SD lookup to
    race with them.

    Args:
        store: the trust store.
        peer: the paired device.
        to: ``--to HOST[:PORT]``, or None.
        discovery_timeout: seconds to look for it with DNS-SD (0: do not).
        interfaces: IPv4 addresses of the interfaces to browse; empty means all.

    Returns:
        The candidates (only ``--to`` when given) and the lookup (None: none).

    Raises:
        BadInput: ``to`` is malformed, or there is no address to use.
    """
    if to is not None:
        host, port = parse_address(to, TUNNEL_PORT)
        return [Candidate(host=host, port=port, source=TO)], None
    candidates, discover = route(store, peer, TUNNEL, TUNNEL_PORT,
                                 discovery_timeout=discovery_timeout, interfaces=interfaces)
    if not candidates and discover is not None:
        # Nothing in the book: look now, so that the start already says where PEER is.
        found = announced(store, peer, TUNNEL, timeout=discovery_timeout,
                          interfaces=interfaces)
        candidates = found(threading.Event())
    if not candidates:
        raise BadInput(f"no address known for {peer.name} and no tunnel of it found on the "
                       f"local network: give --to HOST[:PORT]")
    return candidates, discover


def resolve_far_end(
    store: TrustStore, peer: Peer, to: str | None, *, discovery_timeout: float = 0.0,
    interfaces: Sequence[str] = (),
) -> tuple[str, int, str]:
    """The first place to try ``peer``'s ``tunnel serve`` (see
    :func:`far_end_candidates`): ``(host, port, source)``; source is ``--to``,
    ``pairing``, ``contact`` or ``dns-sd``.

    Raises:
        BadInput: ``to`` is malformed, or there is no address to use.
    """
    candidates, _ = far_end_candidates(store, peer, to, discovery_timeout=discovery_timeout,
                                       interfaces=interfaces)
    first = candidates[0]
    return first.host, first.port, first.source

