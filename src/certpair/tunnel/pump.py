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
from typing import cast

from certpair.trusted import NotPaired, connection_error
from certpair.tunnel.link import CHUNK, TlsLink, reset, thread_buffer, trim_thread_buffers

__all__ = ["DONE", "HALF_CLOSE_TIMEOUT", "Relay", "arm_reset", "wake_pair"]

DONE = "done"
HALF_CLOSE_TIMEOUT = 60.0
_RECORD = 16384  # the most plaintext one TLS record holds: what one read returns
_OUT = CHUNK + _RECORD  # plaintext waiting for the plain side, at most
_LAST = _OUT - _RECORD  # the last place a record's read can start
# One plain read's records fill exactly CHUNK bytes on the wire (TLS 1.3, AES-GCM or
# ChaCha20-Poly1305: 5 header + 1 type + 16 tag bytes per record, 4 records). A transit
# relay reads 64 KiB at a time (Twisted): 64 KiB of plaintext made 65,624 bytes, which
# it took in two reads (65,536 + 88) whenever it kept up, twice its work per byte.
_PLAIN_CHUNK = CHUNK - (CHUNK // _RECORD) * 22
_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_ROOM = select.POLLOUT | select.POLLHUP | select.POLLERR
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

    def attach(self, plain: socket.socket, *, armed: bool = False) -> bool:
        """Give the relay its plain side; False (and the socket closed) if already cut.
        ``armed``: the caller made it reset on close already (:func:`arm_reset`)."""
        if not armed:
            arm_reset(plain)
        with self._lock:
            if self._cut is None:
                self.plain = plain
                self._wake = wake_pair()
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

    def _decrypt(self, out: memoryview, start: int, end: int) -> tuple[int, int, bool]:
        """Read records into ``out[end:]`` (plaintext waiting in ``out[start:end]``) while
        fewer than :data:`CHUNK` bytes wait, one record per read, each into its place.
        A read is tried only when OpenSSL has bytes to work on: without, it could only
        fail. Returns the new ``start``, ``end``, and whether the TLS stream ended."""
        link = self.link
        tls, incoming = link.tls, link.incoming
        read = cast("Callable[[int, memoryview], int]", tls.read)  # into a buffer: a count
        got = 0
        done = False
        try:
            while end - start < CHUNK and (incoming.pending or link.raw_eof or tls.pending()):
                if end > _LAST:  # no room after the rest: move it to the front
                    out[:end - start] = out[start:end]
                    start, end = 0, end - start
                try:
                    size = read(_RECORD, out[end:end + _RECORD])
                except ssl.SSLZeroReturnError:  # close_notify (after ours): the end
                    size = 0
                if self.on_status is not None:  # the first byte is the status: not carried
                    self._take_status(out[end] if size else None)
                    if size > 1:
                        out[end:end + size - 1] = out[end + 1:end + size]
                    size = max(size - 1, 0)
                    if not size:
                        continue
                if not size:
                    done = True
                    break
                end += size
                got += size
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            raise _Broken(_tls_reason(exc)) from exc
        if got:
            if not self.received and self.on_data is not None:
                self.on_data()
            self.received += got
        return start, end, done

    def _take_status(self, first: int | None) -> None:
        """Hand the far end's status byte (None: it closed first) to the preamble; raise
        what it means if the connection cannot go on."""
        on_status, self.on_status = self.on_status, None
        assert on_status is not None
        verdict = on_status(first)
        if verdict is not None:
            raise _Broken(verdict)

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
            if self.sent + self.received > _RECORD:  # it filled this thread's buffers
                trim_thread_buffers()
        return reason

    def _loop(self, plain: socket.socket) -> str:  # noqa: PLR0915  # one loop reads best
        link, tls, incoming = self.link, self.link.tls, self.link.incoming
        plain.setblocking(False)
        # TLS -> plain: plaintext waits in out[start:end] (mapped when the first record
        # comes); plain -> TLS: OpenSSL's records wait in the link's outbox.
        out: memoryview | None = None
        start = end = 0
        to_tls = link.outbox
        tls_done = plain_done = notify_sent = plain_shut = False
        tls_fin = plain_fin = False  # that side's peer shut down writing (POLLRDHUP)
        poller = select.poll()
        assert self._wake is not None
        poller.register(self._wake[0], select.POLLIN)
        tls_fd, plain_fd = link.sock.fileno(), plain.fileno()
        tls_events = plain_events = 0  # what the poller watches on each (0: not registered)
        tls_full = plain_full = False  # that socket took less than offered: wait for POLLOUT
        scratch = link.scratch
        last = time.monotonic()
        while self._cut is None:
            # TLS -> plain: decrypt what has arrived, while the plain side keeps up.
            if not tls_done and end - start < CHUNK:
                if out is None:  # this thread's: a thread runs one relay at a time
                    out = thread_buffer("out", _OUT)
                start, end, tls_done = self._decrypt(out, start, end)
            # Stopped with room left: OpenSSL needs more bytes (not: the plain side is
            # behind).
            starved = not tls_done and end - start < CHUNK
            # Only now no unread record can be taken for data after our close_notify.
            if plain_done and not notify_sent and not incoming.pending:
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.unwrap()
                notify_sent = True
            link.collect()
            # A socket that took less than offered is full: the next send waits for
            # poll's word (a send that fails builds an exception, which costs more).
            moved = 0
            if end > start and not plain_full:
                assert out is not None
                try:
                    moved = plain.send(out[start:end])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    raise _Broken(f"the service side broke: {exc.strerror or exc}") from exc
                start += moved
                plain_full = start < end
                if not plain_full:
                    start = end = 0
            if to_tls.size and not tls_full:
                try:
                    moved += to_tls.send(link.sock)
                except OSError as exc:
                    raise _Broken(
                        f"the tunnel connection broke: {exc.strerror or exc}") from exc
                tls_full = to_tls.size > 0
            if tls_done and end == start and not plain_shut:
                with contextlib.suppress(OSError):
                    plain.shutdown(socket.SHUT_WR)
                plain_shut = True
            if plain_shut and notify_sent and not to_tls.size:
                return DONE
            now = time.monotonic()
            if moved:
                last = now
            tls_fin = tls_fin or tls_done or link.raw_eof
            plain_fin = plain_fin or plain_done
            events = ((select.POLLIN if not tls_done and not link.raw_eof
                       and end - start < CHUNK and incoming.pending < CHUNK else 0)
                      | (select.POLLOUT if to_tls.size else 0)
                      | (0 if tls_fin else _RDHUP))
            if events != tls_events:
                tls_events = _watch(poller, tls_fd, tls_events, events)
            events = ((select.POLLIN if not plain_done and to_tls.size < CHUNK else 0)
                      | (select.POLLOUT if end > start else 0)
                      | (0 if plain_fin else _RDHUP))
            if events != plain_events:
                plain_events = _watch(poller, plain_fd, plain_events, events)
            if not starved and not tls_done and end - start < CHUNK:
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
            for fd, happened in poller.poll(timeout):
                if fd == tls_fd:
                    on_tls, watched = True, tls_events
                elif fd == plain_fd:
                    on_tls, watched = False, plain_events
                else:
                    continue  # the wake-up: the loop checks for a cut
                if happened & (_RDHUP | select.POLLHUP | select.POLLERR):
                    # Noted even while backpressure keeps this side unread.
                    tls_fin, plain_fin = (True, plain_fin) if on_tls else (tls_fin, True)
                if happened & _ROOM:  # room to send, or an error the next send reports
                    tls_full, plain_full = (False, plain_full) if on_tls else (tls_full, False)
                if not happened & _IN or not watched & select.POLLIN:
                    if happened & select.POLLERR:
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
                    size = plain.recv_into(scratch, _PLAIN_CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    raise _Broken(f"the service side broke: {exc.strerror or exc}") from exc
                if not size:
                    plain_done = True
                    continue
                last = time.monotonic()
                self.sent += size
                try:
                    tls.write(scratch[:size])  # OpenSSL cuts it into records at once
                except ssl.SSLError as exc:
                    raise _Broken(_tls_reason(exc)) from exc
        return self._cut


def _watch(poller: select.poll, fd: int, was: int, events: int) -> int:
    """Have ``poller`` watch ``events`` on ``fd`` (which it watched for ``was``)."""
    if not events:  # an fd without interest would report HUP in a loop
        poller.unregister(fd)
    elif was:
        poller.modify(fd, events)
    else:
        poller.register(fd, events)
    return events


def _check(sock: socket.socket, on_tls: bool) -> None:
    """Raise :class:`_Broken` if the socket holds an error (a reset from the other side)."""
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        side = "the tunnel connection" if on_tls else "the service side"
        raise _Broken(f"{side} broke: {os.strerror(error)}")


def wake_pair() -> tuple[int, int]:
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
