"""Carry one connection's bytes both ways between its TLS side and its plain side.

One thread per connection drives both directions with ``poll``, so the ``SSLObject``
is never used from two threads. Each direction holds at most about one
:data:`~certpair.tunnel.link.CHUNK` in flight: while a reader is slow, the tunnel
stops reading from the writer (backpressure; nothing is buffered without bound).

Half-close: EOF from the plain side becomes a TLS close_notify once every record
received so far has been read (see :mod:`certpair.tunnel.link`); a close_notify from
the TLS side becomes ``shutdown(SHUT_WR)`` on the plain socket. The other direction
keeps flowing until its own end. A broken stream on either side (reset, EOF without
close_notify, a TLS error) resets the other side, so that a truncation never looks
like a clean end.

A killed process cannot reset anything itself, so the plain side is armed from
:meth:`Relay.attach` on: it carries ``SO_LINGER`` with a zero timeout, and the kernel's
close of a dead process's socket is then a reset, not a FIN. Only an orderly end
(:data:`DONE`) disarms it just before the close. The connecting end arms its local
socket as soon as it accepts it (:func:`arm_reset`).

Half-closed bound: once either side has ended its direction (an EOF read, or the
kernel's note that the peer shut down writing, ``POLLRDHUP``, seen even while
backpressure keeps the tunnel from reading), a connection on which nothing moves for
``half_close_timeout`` seconds ends as a cut (reason ``half-close timeout``), so a
client that left while its service never reads does not hold the connection forever.

:meth:`Relay.cut` (any thread) ends the connection at once: it wakes the connection's
thread through an eventfd that its ``poll`` always watches; the thread then resets the
plain side (a cut must never look like a clean end) and drops the TLS connection.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

from certpair.trusted import NotPaired, connection_error
from certpair.tunnel.link import CHUNK, Outbox, TlsLink, reset

__all__ = ["DONE", "HALF_CLOSE_TIMEOUT", "Relay", "arm_reset"]

DONE = "done"
HALF_CLOSE_TIMEOUT = 60.0
_RECORD = 16384  # the most plaintext one TLS record holds: what one read returns
_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer shut down writing
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_ORDERLY = struct.pack("ii", 0, 0)


def arm_reset(sock: socket.socket) -> None:
    """Make any close of ``sock`` a reset until :func:`_disarm` (also the kernel's close
    when this process is killed): a cut-off stream must never look complete."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)


def _disarm(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ORDERLY)


class _Broken(Exception):
    """The stream broke; the message is the reason reported."""


class Relay:
    """The two directions of one tunnelled connection (see the module documentation).

    ``sent`` counts plain-side bytes carried into TLS, ``received`` the bytes carried
    out of TLS to the plain side; ``on_data``, if set, is called once, when the first
    of those arrives (the other side has used the connection: it accepted this device).
    """

    def __init__(self, link: TlsLink, *, idle_timeout: float | None,
                 half_close_timeout: float | None = HALF_CLOSE_TIMEOUT) -> None:
        self.link = link
        self.plain: socket.socket | None = None
        self.idle_timeout = idle_timeout
        self.half_close_timeout = half_close_timeout
        self.sent = 0
        self.received = 0
        self.on_data: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._cut: str | None = None
        self._closed = False
        self._wake: tuple[int, int] | None = None
        # The preamble (tunnel/preamble.py): called once with the far end's status byte
        # (None: it closed first), which is not carried; a reason it returns ends the
        # relay as broken (the plain side is reset).
        self.on_status: Callable[[int | None], str | None] | None = None

    @property
    def cut_reason(self) -> str | None:
        """Why :meth:`cut` was called, or None."""
        return self._cut

    def attach(self, plain: socket.socket) -> bool:
        """Give the relay its plain side; False (and the socket closed) if already cut."""
        arm_reset(plain)
        with self._lock:
            if self._cut is None:
                self.plain = plain
                self._wake = _wake_pair()
                return True
        plain.close()
        return False

    def cut(self, reason: str) -> None:
        """End the connection as soon as its thread wakes (from any thread)."""
        with self._lock:
            if self._closed or self._cut is not None:
                return
            self._cut = reason
            if self._wake is not None:
                with contextlib.suppress(OSError):
                    os.write(self._wake[1], b"\x01" * 8)

    def close(self, *, clean: bool) -> None:
        """Release both sockets; a plain side left mid-stream is reset."""
        with self._lock:
            self._closed = True
            for fd in set(self._wake or ()):
                os.close(fd)
            if self.plain is not None:
                if clean:  # both directions ended in order: a FIN, not a reset
                    _disarm(self.plain)
                    self.plain.close()
                else:
                    reset(self.plain)
            self.link.sock.close()

    def _take_status(self, data: bytes) -> bytes:
        """Take the status byte off the stream; raise what it means if not ready."""
        on_status, self.on_status = self.on_status, None
        assert on_status is not None
        verdict = on_status(data[0] if data else None)
        if verdict is not None:
            raise _Broken(verdict)
        return data[1:]

    def run(self) -> str:
        """Carry bytes until both directions ended, or the connection broke or was cut.

        Returns:
            :data:`DONE`, or why it ended early (``idle timeout``, a cut's reason, a
            broken stream's reason). Both sockets are closed on return.
        """
        assert self.plain is not None, "attach() first"
        clean = False
        try:
            reason = self._loop(self.plain)
            clean = reason == DONE
        except _Broken as exc:
            reason = str(exc)
        finally:
            if self._cut is not None:
                reason, clean = self._cut, False
            self.close(clean=clean)
        return reason

    def _loop(self, plain: socket.socket) -> str:  # noqa: PLR0915  # one loop reads best
        link, tls = self.link, self.link.tls
        plain.setblocking(False)
        to_plain = Outbox()
        tls_done = plain_done = notify_sent = plain_shut = False
        tls_fin = plain_fin = False  # that side's peer shut down writing (POLLRDHUP)
        poller = select.poll()
        assert self._wake is not None
        poller.register(self._wake[0], select.POLLIN)
        watched: dict[int, int] = {}
        last = time.monotonic()
        while self._cut is None:
            # TLS -> plain: decrypt what has arrived, while the plain side keeps up.
            starved = False  # OpenSSL needs more bytes (not: the plain side is behind)
            while not tls_done and to_plain.size < CHUNK:
                try:
                    data = tls.read(_RECORD)
                except ssl.SSLWantReadError:
                    starved = True
                    break
                except ssl.SSLZeroReturnError:
                    data = b""
                except ssl.SSLError as exc:
                    raise _Broken(_tls_reason(exc)) from exc
                if self.on_status is not None:
                    data = self._take_status(data)
                    if not data:
                        continue
                if not data:
                    tls_done = True
                    break
                to_plain.add(data)
                if not self.received and self.on_data is not None:
                    self.on_data()
                self.received += len(data)
            # Only now no unread record can be taken for data after our close_notify.
            if plain_done and not notify_sent and not link.incoming.pending:
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.unwrap()
                notify_sent = True
            link.collect()
            try:
                moved = to_plain.send(plain)
            except OSError as exc:
                raise _Broken(f"the service side broke: {exc.strerror or exc}") from exc
            try:
                moved += link.outbox.send(link.sock)
            except OSError as exc:
                raise _Broken(f"the tunnel connection broke: {exc.strerror or exc}") from exc
            if tls_done and not to_plain.size and not plain_shut:
                with contextlib.suppress(OSError):
                    plain.shutdown(socket.SHUT_WR)
                plain_shut = True
            if plain_shut and notify_sent and not link.outbox.size:
                return DONE
            now = time.monotonic()
            if moved:
                last = now
            tls_fin = tls_fin or tls_done or link.raw_eof
            plain_fin = plain_fin or plain_done
            want = {
                link.sock.fileno(): (
                    (select.POLLIN if not tls_done and not link.raw_eof
                     and to_plain.size < CHUNK and link.incoming.pending < CHUNK else 0)
                    | (select.POLLOUT if link.outbox.size else 0)
                    | (0 if tls_fin else _RDHUP)),
                plain.fileno(): (
                    (select.POLLIN if not plain_done and link.outbox.size < CHUNK else 0)
                    | (select.POLLOUT if to_plain.size else 0)
                    | (0 if plain_fin else _RDHUP)),
            }
            for fd, events in want.items():
                if watched.get(fd, 0) != events:
                    if fd in watched:
                        poller.unregister(fd)
                        del watched[fd]
                    if events:  # an fd without interest would report HUP in a loop
                        poller.register(fd, events)
                        watched[fd] = events
            if not starved and not tls_done and to_plain.size < CHUNK:
                continue  # records wait in OpenSSL's buffer and there is room now
            timeout = None
            for limit, why in ((self.idle_timeout, "idle timeout"),
                               (self.half_close_timeout if tls_fin or plain_fin else None,
                                "half-close timeout")):
                if limit is not None:
                    left = last + limit - now
                    if left <= 0:
                        return why
                    timeout = min(timeout if timeout is not None else left * 1000,
                                  left * 1000)
            for fd, events in poller.poll(timeout):
                if fd not in watched:
                    continue  # the wake-up: the loop checks for a cut
                on_tls = fd == link.sock.fileno()
                if events & (_RDHUP | select.POLLHUP | select.POLLERR):
                    # Noted even while backpressure keeps this side unread.
                    tls_fin, plain_fin = (True, plain_fin) if on_tls else (tls_fin, True)
                if not events & _IN or not watched[fd] & select.POLLIN:
                    if events & select.POLLERR:
                        _check(link.sock if on_tls else plain, on_tls)
                    continue
                if on_tls:
                    try:
                        if link.receive():
                            last = time.monotonic()
                    except OSError as exc:
                        raise _Broken(
                            f"the tunnel connection broke: {exc.strerror or exc}") from exc
                    continue
                try:
                    data = plain.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    raise _Broken(f"the service side broke: {exc.strerror or exc}") from exc
                if not data:
                    plain_done = True
                    continue
                last = time.monotonic()
                self.sent += len(data)
                try:
                    tls.write(data)
                except ssl.SSLError as exc:
                    raise _Broken(_tls_reason(exc)) from exc
        return self._cut


def _check(sock: socket.socket, on_tls: bool) -> None:
    """Raise :class:`_Broken` if the socket holds an error (a reset from the other side)."""
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        side = "the tunnel connection" if on_tls else "the service side"
        raise _Broken(f"{side} broke: {os.strerror(error)}")


def _wake_pair() -> tuple[int, int]:
    """A descriptor to poll and one to write to wake the poller (one eventfd on Linux)."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    return os.pipe()


def _tls_reason(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLEOFError):
        return "the tunnel connection closed without close_notify"
    found = connection_error(error, "the other device")
    if isinstance(found, NotPaired):
        return str(found)
    return f"TLS error: {(error.reason or 'error').lower().replace('_', ' ')}"
