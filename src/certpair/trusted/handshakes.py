"""Slots for connections that have not proven anything yet: from the accept to the end of
the TLS handshake and the peer check, apart from the slots of authenticated connections.

An unpaired host must not be able to lock paired devices out by opening idle sockets
(docs/SECURITY.md). So, as nginx's ``limit_conn`` per address and HAProxy's per-source
tracking do:

* each source holds at most ``per_source`` unproven connections (IPv6 sources are
  counted per /64, what one host usually has); a further one is refused at once;
* all sources together hold at most ``total``; when they are all taken, a newcomer from
  a source holding fewer than the busiest one takes the oldest slot of the busiest
  source (that connection is cut), so a host with few connections always gets in
  while a flood only displaces itself;
* each slot expires ``deadline`` seconds after the accept, for the whole handshake,
  however the bytes trickle in;
* connections glued at a relay are counted under the relay's label (``relay tcp:R:P``,
  no address), with a limit of their own (one per waiting connection): a relay, or
  whoever parks connections there, never fills the slots of the relay's address or
  any other. Their ``on_free`` tells the waiting connection when it may go back.

A cut shuts the socket down (``shutdown(SHUT_RDWR)``), which wakes the thread blocked
in its handshake (the slot's owner must :meth:`Slot.leave` before closing the socket);
that thread then reports :attr:`Slot.reason` as the refusal and closes. Counting the
refusals stays with the caller (one audit row per source, reason and minute).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = [
    "DEADLINE",
    "PER_SOURCE",
    "TOTAL",
    "HandshakeSlots",
    "Slot",
    "source_of",
]

TOTAL = 1024
PER_SOURCE = 512
DEADLINE = 5.0

TOO_MANY = "too many unfinished handshakes from this address"
DISPLACED = "handshake slots full: the oldest of the busiest address was dropped"
EXPIRED = "handshake not finished in time"


@functools.lru_cache(maxsize=4096)  # once per source, not per connection (~10 µs each)
def source_of(host: str) -> str:
    """The key a connection's slots are counted under: the address, a /64 for IPv6."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Slot:
    """One unproven connection's place; :meth:`leave` gives it back (idempotent)."""

    __slots__ = ("_fd", "_gate", "expires", "on_free", "proven", "reason", "source")

    def __init__(self, gate: HandshakeSlots, source: str, fd: int, expires: float,
                 on_free: Callable[[bool], None] | None = None) -> None:
        # The descriptor, not the socket object: it stays the same when the socket is
        # wrapped (``ssl.wrap_socket`` detaches the object it was given).
        self._gate, self.source, self._fd, self.expires = gate, source, fd, expires
        self.reason: str | None = None  # why it was cut, if it was
        self.proven = False
        self.on_free = on_free  # told once, when the slot is freed: proven or not

    def leave(self) -> None:
        """The connection ended (or failed): free the slot (call before closing)."""
        self._gate._leave(self)  # the slot belongs to its gate

    def prove(self) -> None:
        """The connection proved itself (its peer is known and let in): free the slot."""
        self.proven = True
        self._gate._leave(self)


class HandshakeSlots:
    """The unproven connections of one listener (see the module documentation)."""

    def __init__(self, *, total: int = TOTAL, per_source: int = PER_SOURCE,
                 deadline: float = DEADLINE) -> None:
        self.total, self.per_source, self.deadline = total, per_source, deadline
        self._lock = threading.Lock()
        # Per source, its slots oldest first; the dict itself in no particular order.
        self._by_source: dict[str, OrderedDict[Slot, None]] = {}
        self._by_fd: dict[int, Slot] = {}
        self._count = 0
        self._wake = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None
        self._stopped = False

    @property
    def busy(self) -> int:
        """Unproven connections holding a slot now."""
        with self._lock:
            return self._count

    def admit(self, host: str, sock: socket.socket, *, per_source: int | None = None,
              on_free: Callable[[bool], None] | None = None) -> Slot | str:
        """Give a just-accepted connection a slot, or say why not (a refusal reason).

        May cut the oldest connection of the busiest source to make room.

        Args:
            host: the source's address, or a label (``relay tcp:R:P``: connections glued
                at a relay are counted apart from any address, under a budget of their own).
            sock: the connection.
            per_source: this source's limit, if not the gate's.
            on_free: called once with whether the connection proved itself, when its slot
                is freed (proven, ended, cut); not called when no slot is given.
        """
        source = source_of(host)
        limit = self.per_source if per_source is None else per_source
        with self._lock:
            mine = self._by_source.get(source)
            held = len(mine) if mine else 0
            if held >= limit:
                return TOO_MANY
            if self._count >= self.total:
                busiest = max(self._by_source, key=lambda s: len(self._by_source[s]))
                if len(self._by_source[busiest]) <= held + 1:
                    return TOO_MANY  # this source is (about) the busiest itself
                self._remove(next(iter(self._by_source[busiest])), DISPLACED)
            slot = Slot(self, source, sock.fileno(), time.monotonic() + self.deadline,
                        on_free)
            self._by_source.setdefault(source, OrderedDict())[slot] = None
            self._by_fd[slot._fd] = slot
            self._count += 1
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, daemon=True,
                                                name="certpair-handshake-deadline")
                self._reaper.start()
        return slot

    def slot_for(self, sock: socket.socket) -> Slot | None:
        """The slot ``sock`` was admitted with (None: not admitted here, or left)."""
        with self._lock:
            return self._by_fd.get(sock.fileno())

    def cut_all(self, reason: str) -> None:
        """Cut every unproven connection (a server that stops)."""
        with self._lock:
            for slot in [s for slots in self._by_source.values() for s in slots]:
                self._remove(slot, reason)

    def stop(self) -> None:
        """End the deadline thread."""
        with self._lock:
            self._stopped = True
            self._wake.notify_all()

    def _leave(self, slot: Slot) -> None:
        with self._lock:
            self._remove(slot, None)

    def _remove(self, slot: Slot, reason: str | None) -> None:
        """Forget a slot (the lock held); with a reason, also cut its connection.

        The cut happens under the lock: its owner gives the slot back (under the lock)
        before it closes the socket, so a cut never reaches a descriptor reused since.
        """
        slots = self._by_source.get(slot.source)
        if slots is None or slot not in slots:
            return
        del slots[slot]
        self._by_fd.pop(slot._fd, None)
        if not slots:
            del self._by_source[slot.source]
        self._count -= 1
        if reason is not None:
            slot.reason = reason
            _shut_down(slot._fd)  # wakes the thread in its handshake
        if slot.on_free is not None:
            slot.on_free(slot.proven)  # must return at once (the lock is held)

    def _reap(self) -> None:
        """Cut the slots whose deadline passed; sleep until the next one."""
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                expired = [s for slots in self._by_source.values() for s in slots
                           if s.expires <= now]
                for slot in expired:
                    self._remove(slot, EXPIRED)
                # Slots are added with growing deadlines: each source's first is its oldest.
                first = min((next(iter(s)).expires for s in self._by_source.values()),
                            default=now + self.deadline)
                self._wake.wait(max(0.01, first - now))



def _shut_down(fd: int) -> None:
    """``shutdown(SHUT_RDWR)`` on a descriptor owned by another socket object."""
    with contextlib.suppress(OSError):
        borrowed = socket.socket(fileno=fd)
        try:
            borrowed.shutdown(socket.SHUT_RDWR)
        finally:
            borrowed.detach()  # the descriptor stays its owner's
