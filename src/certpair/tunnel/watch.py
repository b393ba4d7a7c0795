"""What a running tunnel keeps track of: open connections, the trust they rely on, and
the refusals it counts.

:class:`Connections` holds every connection past its handshake, with the device id of
its peer (store/devices.py: it survives the peer's key rotations, so a rotation never
cuts a connection). :class:`TrustWatch` reads the store's ``peers_version`` every
:data:`POLL_INTERVAL` seconds (one indexed query) and, when it moved, cuts each open
connection whose device is no longer trusted, and may end the whole tunnel (``tunnel
connect`` when its one peer was unpaired here). :class:`Refusals` reports the first
refusal of each (source, reason) at once and the rest as one count per
:data:`REFUSAL_WINDOW`, so a flood of unpaired connections cannot flood the log.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from certpair.errors import CertpairError
from certpair.store import Peer, TrustStore
from certpair.tunnel.pump import Relay

__all__ = [
    "POLL_INTERVAL",
    "REFUSAL_WINDOW",
    "Connections",
    "Refusals",
    "TrustWatch",
    "settle_pairing",
]

POLL_INTERVAL = 0.1
REFUSAL_WINDOW = 60.0


@dataclass(eq=False)
class _Tracked:
    device: str
    relay: Relay


@dataclass
class Connections:
    """Slots for accepted sockets (the max-connections limit) and the open relays."""

    limit: int
    _slots: int = 0
    _handled: int = 0  # connections handed to a worker that has not reported its end
    _open: set[_Tracked] = field(default_factory=set)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def take_slot(self) -> bool:
        """Reserve room for one more connection; False when at the limit."""
        with self._changed:
            if self._slots >= self.limit:
                return False
            self._slots += 1
            return True

    def release_slot(self) -> None:
        """Give back a slot taken by :meth:`take_slot`."""
        with self._changed:
            self._slots -= 1
            self._changed.notify_all()

    def handling(self, delta: int) -> None:
        """Count a connection handed to its worker (+1), or its worker done, its last
        event reported (-1): :meth:`wait_idle` waits for those too, so that a drain's
        ``stopped`` never comes before (or instead of) a ``closed``."""
        with self._changed:
            self._handled += delta
            self._changed.notify_all()

    @property
    def busy(self) -> int:
        """Connections accepted and not finished (including handshakes)."""
        with self._changed:
            return self._slots

    def track(self, device: str, relay: Relay) -> _Tracked:
        """Make a relay cuttable by :meth:`cut_unless` (``device``: its peer's id)."""
        entry = _Tracked(device, relay)
        with self._changed:
            self._open.add(entry)
        return entry

    def untrack(self, entry: _Tracked) -> None:
        """Forget a finished relay."""
        with self._changed:
            self._open.discard(entry)

    def cut_unless(self, trusted: Callable[[str], bool], reason: str) -> int:
        """Cut every open relay whose device is not ``trusted``; return how many."""
        with self._changed:
            doomed = [e for e in self._open if not trusted(e.device)]
        for entry in doomed:
            entry.relay.cut(reason)
        return len(doomed)

    def wait_change(self, timeout: float) -> None:
        """Wait until a connection ends, or ``timeout`` seconds."""
        with self._changed:
            self._changed.wait(timeout)

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no connection is left or ``deadline`` (monotonic) passes."""
        with self._changed:
            while self._slots or self._handled:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True


class Refusals:
    """Counts refused connections per (source host, reason); see the module docs.

    ``report(host, reason, count)`` is called from the refusing thread for the first
    refusal of a key in a window, and from :meth:`flush` for the rest.
    """

    def __init__(self, report: Callable[[str, str, int], None], *,
                 window: float = REFUSAL_WINDOW) -> None:
        self.report = report
        self.window = window
        self.total = 0
        self._lock = threading.Lock()
        self._since: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], int] = {}

    def add(self, host: str, reason: str) -> None:
        """Count one refusal."""
        key = (host, reason)
        with self._lock:
            self.total += 1
            first = key not in self._since
            if first:
                self._since[key] = time.monotonic()
            else:
                self._pending[key] = self._pending.get(key, 0) + 1
        if first:
            self.report(host, reason, 1)

    def flush(self, *, everything: bool = False) -> None:
        """Report the counts of windows that ended (all of them with ``everything``)."""
        now = time.monotonic()
        with self._lock:
            ended = [k for k, t in self._since.items() if everything or now - t >= self.window]
            counts = [(k, self._pending.pop(k, 0)) for k in ended]
            for key in ended:
                del self._since[key]
        for (host, reason), count in counts:
            if count:
                self.report(host, reason, count)


class TrustWatch(threading.Thread):
    """Cuts open connections whose device left the trusted set; flushes refusal counts.

    ``trusted(devices)`` maps the device ids of the store's current peers to those
    allowed. ``ending(devices)``, if given, returns why the whole tunnel must end (or
    None): then every connection is cut with that reason, :attr:`ended` holds it and
    ``on_end`` is called (the accept loop stops).
    """

    def __init__(self, store: TrustStore, connections: Connections, refusals: Refusals,
                 trusted: Callable[[frozenset[str]], frozenset[str]], *,
                 tick: Callable[[], None] | None = None,
                 ending: Callable[[frozenset[str]], str | None] | None = None) -> None:
        super().__init__(name="certpair-tunnel-watch", daemon=True)
        self.store, self.connections, self.refusals = store, connections, refusals
        self.trusted, self.ending = trusted, ending
        self.ended: str | None = None
        self.on_end: Callable[[], None] = lambda: None
        self.tick = tick  # called after each check (writes batched log rows)
        self.stopping = threading.Event()
        self.allowed = self._read()
        self._version = -1

    @property
    def version(self) -> int:
        """The ``peers_version`` of the last check (-1 before the first): a connection
        admitted at this version, and tracked since, is cut by the next change."""
        return self._version

    def _devices(self) -> frozenset[str]:
        return frozenset(p.device_id for p in self.store.peers())

    def _read(self) -> frozenset[str]:
        return self.trusted(self._devices())

    def admits(self, device: str) -> bool:
        """Whether a connection of ``device`` may be carried now."""
        return self.ended is None and device in self.allowed

    def check(self) -> None:
        """Re-read the peers if they changed, and cut the connections they no longer allow."""
        version = self.store.peers_version()
        if version != self._version:
            self._version = version  # read first: a racing change shows up next time
            devices = self._devices()
            self.allowed = self.trusted(devices)
            ended = self.ending(devices) if self.ending is not None else None
            if ended is not None and self.ended is None:
                self.ended = ended
                self.connections.cut_unless(lambda _: False, ended)
                self.on_end()
                return
            self.connections.cut_unless(self.admits, "unpaired")

    def run(self) -> None:
        """Poll until :meth:`stop`; a store that fails to read is retried next time."""
        while not self.stopping.wait(POLL_INTERVAL):
            try:
                self.check()
            except Exception:  # noqa: S112  # keep watching; the store may come back
                continue
            self.refusals.flush()
            if self.tick is not None:
                self.tick()

    def stop(self) -> None:
        """End the thread after its current check."""
        self.stopping.set()


def settle_pairing(store: TrustStore, peer: Peer, remote: str) -> None:
    """Mark an unconfirmed pairing confirmed: the peer has just shown it trusts this device.

    Call it only once that is shown: on either side once the other has sent application
    data over the connection (``Relay.on_data``). A completed handshake is not enough:
    a TLS 1.3 client may finish it whatever it thinks of this device, and hang up.
    A store that cannot be written leaves the pairing unconfirmed, never the tunnel down.
    """
    if peer.confirmed:
        return
    with contextlib.suppress(CertpairError):
        store.confirm_peer(peer.fingerprint, remote=remote, reason="tunnel connection")

