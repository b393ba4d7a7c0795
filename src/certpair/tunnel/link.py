"""One TLS connection driven by hand: an ``SSLObject`` over memory BIOs and a socket.

The tunnel owns the bytes between the kernel and OpenSSL, so that it can send its
close_notify at a moment when no unread record can be mistaken for data after the
close (OpenSSL's ``SSL_shutdown`` would discard it, or fail), and so that one thread
can drive both directions of a connection without ever using an ``SSL`` object from
two threads at once. Every wait here is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from certpair.trusted import PeerRefused

__all__ = ["CHUNK", "Outbox", "TlsLink", "reset", "thread_buffer", "trim_thread_buffers",
           "wait_for"]

# The most one read takes from a socket, and about the most a direction holds in flight.
# 256 KiB cost the same CPU per GiB (measured again for issue 23: per-record work
# dominates, not per-read) and raised the peak RSS of 16 busy connections by ~10 MB:
# OpenSSL's memory BIOs never shrink (docs/PERFORMANCE.md).
CHUNK = 64 * 1024
_LINGER = 2.0
_THREAD = threading.local()


def wait_for(sock: socket.socket, events: int, deadline: float) -> None:
    """Wait until ``sock`` is ready for ``events`` (``select.POLLIN``/``POLLOUT``).

    Raises:
        TimeoutError: the deadline passed first.
    """
    poller = select.poll()
    poller.register(sock, events)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        if poller.poll(left * 1000):
            return


class Outbox:
    """Bytes waiting for a non-blocking socket, sent without joining them."""

    def __init__(self) -> None:
        self._parts: deque[bytes | memoryview] = deque()
        self.size = 0

    def add(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self.size += len(data)

    def send(self, sock: socket.socket) -> int:
        """Send what the socket takes now; return the byte count (0 if it would block)."""
        if not self.size:
            return 0
        parts = self._parts
        try:
            sent = (sock.send(parts[0]) if len(parts) == 1
                    else sock.sendmsg(list(itertools.islice(parts, 64))))
        except (BlockingIOError, InterruptedError):
            return 0
        self.size -= sent
        left = sent
        while left:
            head = parts[0]
            if len(head) <= left:
                left -= len(head)
                parts.popleft()
            else:
                parts[0] = memoryview(head)[left:]
                left = 0
        return sent


class TlsLink:
    """A non-blocking socket and the ``SSLObject`` that speaks TLS over it."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *,
                 server_side: bool) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side)
        self.outbox = Outbox()
        self.raw_eof = False

    @property
    def scratch(self) -> memoryview:
        """A buffer of :data:`CHUNK` bytes for one read at a time, whose bytes are copied
        on at once (into OpenSSL) so that it can be reused: the socket's reads land here
        without allocating. The calling thread's (:func:`thread_buffer`): nothing stays
        in it between two calls."""
        return thread_buffer("scratch", CHUNK)

    def collect(self) -> None:
        """Move what OpenSSL wrote into the outbox."""
        if self.outgoing.pending:
            self.outbox.add(self.outgoing.read())

    def receive(self) -> int:
        """Feed what the socket has now to OpenSSL; return the byte count (EOF noted)."""
        scratch = self.scratch
        try:
            size = self.sock.recv_into(scratch)
        except (BlockingIOError, InterruptedError):
            return 0
        if size:
            self.incoming.write(scratch[:size])
        else:
            self.raw_eof = True
            self.incoming.write_eof()
        return size

    def flush(self, deadline: float) -> None:
        """Send everything OpenSSL has written, waiting at most until ``deadline``."""
        self.collect()
        while self.outbox.size:
            if not self.outbox.send(self.sock):
                wait_for(self.sock, select.POLLOUT, deadline)

    def handshake(self, deadline: float) -> None:
        """Run the TLS handshake to its end (blocking, bounded).

        Raises:
            ssl.SSLError: the handshake failed (any alert is sent first, best effort).
            TimeoutError: the deadline passed.
            OSError: the connection broke.
        """
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.flush(deadline)
                if self.raw_eof:
                    raise ssl.SSLEOFError("the other side closed during the handshake") from None
                wait_for(self.sock, select.POLLIN, deadline)
                self.receive()
                continue
            except PeerRefused:
                raise  # refused after OpenSSL's handshake: nothing more to send
            except ssl.SSLError:
                with contextlib.suppress(OSError):  # the alert, so the other side knows
                    self.flush(min(deadline, time.monotonic() + 1.0))
                raise
            self.flush(deadline)
            return

    def linger_close(self, before_close: Callable[[], None] | None = None) -> None:
        """Close after sending what is queued (such as an alert): half-close, then read
        briefly, so that unread bytes do not turn the close into a reset that would
        destroy the alert before the other side reads it. ``before_close`` runs just
        before the descriptor is closed."""
        deadline = time.monotonic() + _LINGER
        with contextlib.suppress(OSError):
            self.flush(deadline)
            self.sock.shutdown(socket.SHUT_WR)
            while True:
                wait_for(self.sock, select.POLLIN, deadline)
                if not self.sock.recv(CHUNK):
                    break
        if before_close is not None:
            before_close()
        self.sock.close()


def thread_buffer(name: str, size: int) -> memoryview:
    """The calling thread's buffer ``name`` of ``size`` bytes, for work that starts and
    ends in this thread (a connection's reads, its relay): a thread runs one connection
    at a time, and keeps its buffers for the next one instead of mapping and unmapping
    them for each (two system calls and page faults per buffer and connection, under
    the GIL). Mapped on first use, so its pages are resident only once touched (a thread
    that carried only short connections holds a page or two, not the whole buffer)."""
    mine: dict[str, tuple[mmap.mmap, memoryview]] = _THREAD.__dict__
    found = mine.get(name)
    if found is None or len(found[1]) != size:
        mapped = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        found = mine[name] = (mapped, memoryview(mapped))
    return found[1]


def trim_thread_buffers() -> None:
    """Give the pages of the calling thread's buffers back to the system (they read as
    zeros when touched again): after a connection that filled them, so that an idle
    thread does not keep them resident."""
    for mapped, _ in _THREAD.__dict__.values():
        with contextlib.suppress(OSError):
            mapped.madvise(mmap.MADV_DONTNEED)


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the other side must not take a broken stream for a
    complete one (a clean FIN would hide a truncation)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
