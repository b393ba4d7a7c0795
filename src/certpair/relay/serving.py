"""A server's waiting connections at a relay, in threads (``serve``, ``tunnel serve``),
and the client's way to one of them.

The server keeps ``SLOTS`` connections waiting, one under each of its tokens (made of
its fingerprint, the service and the slot number: public values only). When the relay
glues one to a client, the socket is handed over (``hand_over``, which runs the TLS
handshake: mutual TLS decides who gets in, exactly as on a direct connection) with a
``settle`` callback the server calls once that connection has proven itself (its peer
let in) or ended. Only then does the slot go back to the relay: at once after a proven
connection, after a delay that doubles from ``MIN_BACKOFF`` to ``MAX_BACKOFF`` after
each one that ended unproven (a relay that glues its waiting connections to nobody,
or to a squatter that stays silent, cannot make this end spin, and never holds more
than ``SLOTS`` unproven connections here). A waiting connection is renewed every
``REFRESH`` seconds, so that a relay that vanished without a word is noticed; a relay
that cannot be reached is retried after the same growing delay. The fingerprints it
waits under follow this device's key (:func:`own_fingerprints`, looked at every
``FOLLOW`` seconds): while a rotation is pending it waits under the current and the
next key, after it under the new key alone, without a restart. A client picks a slot
at random; if the relay drops it (another client took that slot first), it tries
another after a short, growing pause, at most ``MAX_TRIES`` times (a relay that closes
every handshake cannot make a client spin either).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from certpair.identity import fingerprint as fingerprint_of
from certpair.ports import cannot_reach
from certpair.relay.address import (
    CONNECTING_SIDE,
    WAITING_SIDE,
    RelayAddress,
    service_token,
)
from certpair.relay.connect import RelayClosed, RelayError, connect_relay
from certpair.relay.waiting import MAX_BACKOFF, MIN_BACKOFF

__all__ = [
    "FOLLOW",
    "MAX_TRIES",
    "REFRESH",
    "SLOTS",
    "RelayServing",
    "Settle",
    "dial_service",
    "own_fingerprints",
]

SLOTS = 4
REFRESH = 120.0
# Seconds between looks at this device's key (a rotation changes the tokens).
FOLLOW = 2.0
# A client's tries at the relay (each a slot the relay dropped) before it gives up.
MAX_TRIES = 3 * SLOTS
# Its pause after a dropped try: from this, doubling, at most RETRY_PAUSE_MAX.
RETRY_PAUSE = 0.05
RETRY_PAUSE_MAX = 1.0

# Told once whether a handed-over connection proved itself (True) or ended unproven.
Settle = Callable[[bool], None]


class RelayServing:
    """Waiting connections of one service at one relay, each in a daemon thread.

    Args:
        relay: the relay.
        fingerprint: this device's fingerprint, or a function giving the
            fingerprints to wait under now (:func:`own_fingerprints`), followed every
            ``FOLLOW`` seconds.
        service: ``serve`` or ``tunnel``.
        hand_over: called with each glued socket, its remote label and a
            :data:`Settle` callback, in the slot's thread; it must return quickly
            (start a thread), owns the socket, and must call ``settle`` once the
            connection has proven itself or ended (the slot waits for that).
        on_status: told ``(waiting, reason, retry_in)`` when a slot's state changes.
        slots: how many connections wait at once.
    """

    def __init__(self, *, relay: RelayAddress,
                 fingerprint: str | Callable[[], Sequence[str]], service: str,
                 hand_over: Callable[[socket.socket, str, Settle], None],
                 on_status: Callable[[bool, str, float], None] = lambda *_: None,
                 slots: int = SLOTS) -> None:
        self.relay = relay
        self.remote = f"relay {relay}"
        self.service = service
        self.slots = slots
        self.fingerprints: Callable[[], Sequence[str]] | None = (
            None if isinstance(fingerprint, str) else fingerprint)
        self.following = [fingerprint] if isinstance(fingerprint, str) else \
            list(fingerprint())
        self.tokens = self._tokens(self.following)
        self.retired: set[str] = set()  # tokens no longer waited under (a rotation)
        self.renewed: set[socket.socket] = set()  # waits ended by a change of tokens
        self.hand_over = hand_over
        self.on_status = on_status
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.waiting_under: dict[socket.socket, str] = {}  # waiting, by token
        self.troubled = True
        self.glued = 0
        self.unsettled: set[threading.Event] = set()  # handed over, not settled yet
        self.threads = [self._thread(token) for token in self.tokens]

    def _tokens(self, fingerprints: Sequence[str]) -> list[str]:
        return [service_token(fp, self.service, slot)
                for fp in fingerprints for slot in range(self.slots)]

    def _thread(self, token: str) -> threading.Thread:
        return threading.Thread(target=self._slot, args=(token,), daemon=True,
                                name=f"certpair-relay-slot-{token[:8]}")

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        if self.fingerprints is not None:
            threading.Thread(target=self._follow, daemon=True,
                             name="certpair-relay-follow").start()

    def _follow(self) -> None:
        """Wait under the tokens of this device's key as it is now: new slots for a
        new key, and the waits under a key no longer held ended (never a glued
        connection: it finishes as it would have)."""
        assert self.fingerprints is not None
        while not self.stopping.wait(FOLLOW):
            try:
                now = list(self.fingerprints())
            except (OSError, ValueError):
                continue  # mid-replacement: looked at again next time
            if not now or now == self.following:
                continue
            wanted = self._tokens(now)
            with self.lock:
                self.following = now
                gone = set(self.tokens) - set(wanted)
                self.retired |= gone
                self.retired -= set(wanted)
                fresh = [t for t in wanted if t not in self.tokens]
                self.tokens = wanted
                for sock, token in list(self.waiting_under.items()):
                    if token in gone:
                        self.renewed.add(sock)
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
            for token in fresh:
                thread = self._thread(token)
                self.threads.append(thread)
                thread.start()

    def stop(self) -> None:
        """End every wait (the connections already handed over keep running)."""
        self.stopping.set()
        with self.lock:
            for settled in self.unsettled:
                settled.set()
            for sock in self.waiting_under:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _status(self, waiting: bool, reason: str, retry_in: float) -> None:
        with self.lock:
            changed = self.troubled == waiting
            self.troubled = not waiting
        if changed or not waiting:
            self.on_status(waiting, reason, retry_in)

    def _slot(self, token: str) -> None:
        delay = MIN_BACKOFF
        while not self.stopping.is_set() and token not in self.retired:
            started = time.monotonic()
            try:
                sock = self._wait(token)
            except (RelayError, OSError) as exc:
                if self.stopping.is_set():
                    return
                if time.monotonic() - started >= REFRESH / 2:
                    delay = MIN_BACKOFF
                reason = str(exc) if isinstance(exc, RelayError) else \
                    str(cannot_reach(f"the relay {self.relay}", exc, relay=True))
                self._status(False, reason, delay)
                self.stopping.wait(delay)  # a retry delay, ended early by stop()
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            if sock is None:
                delay = MIN_BACKOFF
                continue  # renewed
            if self._handed_over(sock):
                delay = MIN_BACKOFF
                continue  # proven: the slot goes back at once
            # Ended unproven (glued to nobody, to a silent squatter, to an unpaired
            # device): back to the relay only after a growing delay.
            self.stopping.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _handed_over(self, sock: socket.socket) -> bool:
        """Hand a glued connection over and wait until it proved itself (True) or
        ended (False)."""
        settled = threading.Event()
        proven: list[bool] = []

        def settle(ok: bool) -> None:
            if not settled.is_set():
                proven.append(ok)
                settled.set()

        with self.lock:
            self.glued += 1
            self.unsettled.add(settled)
        try:
            self.hand_over(sock, self.remote, settle)
            settled.wait()  # set by settle(), or by stop()
        finally:
            with self.lock:
                self.unsettled.discard(settled)
        return bool(proven and proven[0])

    def _wait(self, token: str) -> socket.socket | None:
        """One waiting connection: the glued socket, or None when it was renewed."""
        sock = socket.create_connection((self.relay.host, self.relay.port), timeout=10)
        with self.lock:
            if token in self.retired:
                sock.close()
                return None
            self.waiting_under[sock] = token
        try:
            try:
                glued = connect_relay(self.relay, token, WAITING_SIDE, timeout=REFRESH,
                                      sock=sock, on_sent=lambda: self._status(True, "", 0))
            except TimeoutError:
                sock.close()
                return None
            except (RelayError, OSError):
                with self.lock:
                    renewed = sock in self.renewed
                if not renewed:
                    raise
                sock.close()
                return None  # its key is no longer this device's: not a relay failure
        finally:
            with self.lock:
                self.waiting_under.pop(sock, None)
                self.renewed.discard(sock)
        return glued


def dial_service(relay: RelayAddress, fingerprint: str, service: str, *, deadline: float,
                 slots: int = SLOTS) -> socket.socket:
    """Reach a device's service through the relay (blocking), before ``deadline``.

    Returns:
        A socket glued to one of the server's waiting connections (TLS comes next).

    Raises:
        RelayError: the relay cannot be reached, or refused the handshake.
        RelayClosed: the relay closed every try (``MAX_TRIES`` of them, or all those
            the deadline allowed): it refuses, or another device keeps taking the
            waiting connections.
        TimeoutError: no waiting connection of that device came in time.
    """
    tried: list[int] = []
    pause = RETRY_PAUSE
    while True:
        left = deadline - time.monotonic()
        if tried and (left <= 0 or len(tried) >= MAX_TRIES):
            raise RelayClosed(
                f"the relay {relay} closed every attempt ({len(tried)} in a row) before "
                "the device's waiting connection was reached: the relay refuses, or "
                "another device keeps taking those connections")
        if left <= 0:
            raise TimeoutError("no waiting connection at the relay")
        free = [n for n in range(slots) if n not in tried] or list(range(slots))
        slot = free[secrets.randbelow(len(free))]
        tried.append(slot)
        try:
            return connect_relay(relay, service_token(fingerprint, service, slot),
                                 CONNECTING_SIDE, timeout=left)
        except RelayClosed:
            # Another client took that slot first: another one, after a short pause
            # (a relay that closes every try must not make this end spin).
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, RETRY_PAUSE_MAX)



def own_fingerprints(home: Path) -> Callable[[], list[str]]:
    """What this device's waiting connections wait under, for :class:`RelayServing`:
    its key's fingerprint, and the next key's while a rotation is pending
    (``identity/next-cert.pem``), so that a peer that learned the successor finds it
    before and after the rotation ends. The files are read again only when they
    changed."""
    paths = (home / "identity" / "cert.pem", home / "identity" / "next-cert.pem")
    seen: list[tuple[int, ...]] = []
    found: list[str] = []

    def stamp(path: Path) -> tuple[int, ...]:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return ()
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def now() -> list[str]:
        stamps = [stamp(path) for path in paths]
        if stamps != seen:
            fresh = [fingerprint_of(ssl.PEM_cert_to_DER_cert(path.read_text("ascii")))
                     for path, mark in zip(paths, stamps, strict=True) if mark]
            seen[:], found[:] = stamps, fresh
        return list(found)

    return now
