"""The threads that run a tunnel's connections (tunnel/acceptor.py uses them).

:class:`Acceptors` accept connections themselves and each runs the one it accepted;
:class:`Workers` is a pool fed jobs from elsewhere (the connections a transit relay
hands over). Both keep idle threads for the next connections: starting a thread per
connection costs more than reusing one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import socket
import threading
from collections.abc import Callable

from certpair.tunnel.link import reset
from certpair.tunnel.pump import wake_pair
from certpair.tunnel.watch import Connections, TrustWatch

__all__ = ["Acceptors", "Workers"]

_IDLE_WORKER = 60.0
_WAITING = 2  # threads kept waiting for the next connection, at least
_EPOLL = hasattr(select, "epoll")  # Linux; elsewhere each waiting thread polls
_ONESHOT = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Workers:
    """Threads kept for the next connections: starting a thread per connection costs
    more than a queue hand-off (measured on the connect time). An idle thread ends
    after :data:`_IDLE_WORKER` seconds."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._work, args=(job,), daemon=True,
                         name="certpair-tunnel-connection").start()

    def _work(self, job: Callable[[], None]) -> None:
        while True:
            job()
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=_IDLE_WORKER)
            except queue.Empty:
                with self._lock:
                    try:  # a job handed over while the wait timed out is still ours
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return


class Acceptors:
    """Threads that accept connections themselves and run each one they accepted.

    Handing an accepted connection from an accepting thread to a worker cost two thread
    switches per connection (about 0.1 ms of CPU per connection at each tunnel end,
    docs/PERFORMANCE.md). Here the threads waiting for a connection share one readiness
    wait on the listener: the kernel wakes one of them per connection (``epoll`` with
    ``EPOLLONESHOT``, re-armed at once after the accept; elsewhere, ``poll`` in each
    thread, which may wake several), and that thread runs what it accepted. A thread
    that takes the last waiting place starts another first; one that waited
    :data:`_IDLE_WORKER` seconds for nothing ends while :data:`_WAITING` others wait.
    """

    def __init__(self, listener: socket.socket, run: Callable[[socket.socket, object], None],
                 connections: Connections, watch: TrustWatch) -> None:
        self._listener, self._run = listener, run
        self._connections, self._watch = connections, watch
        listener.setblocking(False)  # a wake-up another thread served first: no wait
        self._stop_r, self._stop_w = wake_pair()
        self._epoll: select.epoll | None = None
        if _EPOLL:
            self._epoll = select.epoll()
            self._epoll.register(listener.fileno(), _ONESHOT)
            self._epoll.register(self._stop_r, select.EPOLLIN)  # wakes every thread
        self._lock = threading.Condition()
        self._waiting = 0  # threads waiting for a connection (or about to accept one)
        self._stopping = False
        self._done = threading.Event()
        self.error: Exception | None = None

    def start(self) -> None:
        """Start the first threads: two, so that one always waits while one accepts."""
        for _ in range(_WAITING):
            self._spawn()

    def wait(self) -> None:
        """Until :meth:`stop` (the trust watch), or a failing accept (:attr:`error`)."""
        self._done.wait()

    def stop(self) -> None:
        """Stop accepting (any thread): waiting threads end, busy ones after their
        connection."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"\x01" * 8)
        self._done.set()

    def close(self) -> None:
        """Stop, wait until no thread can call accept() any more, close the listener."""
        self.stop()
        with self._lock:
            while self._waiting:
                self._lock.wait()
        if self._epoll is not None:
            self._epoll.close()
        for fd in {self._stop_r, self._stop_w}:
            os.close(fd)
        self._listener.close()

    def _spawn(self) -> None:
        with self._lock:
            self._waiting += 1
        try:
            threading.Thread(target=self._serve, daemon=True,
                             name="certpair-tunnel-connection").start()
        except RuntimeError:  # no thread to be had: the ones there go on
            self._left()

    def _left(self) -> None:
        """A waiting thread ends (the lock not held)."""
        with self._lock:
            self._waiting -= 1
            self._lock.notify_all()

    def _wait(self) -> bool:
        """Wait for a connection to accept; False after :data:`_IDLE_WORKER` seconds."""
        if self._epoll is not None:
            return bool(self._epoll.poll(_IDLE_WORKER, 1))  # one event is all it takes
        poller = select.poll()
        poller.register(self._listener, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        return bool(poller.poll(_IDLE_WORKER * 1000))

    def _accept(self) -> tuple[socket.socket, object] | None:
        """One connection, or None (another thread took it, or out of descriptors)."""
        try:
            return self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            # Out of descriptors: let open connections end, then retry.
            self._connections.wait_change(0.1)
            return None
        finally:
            if self._epoll is not None:  # the next connection wakes a waiting thread
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.modify(self._listener.fileno(), _ONESHOT)

    def _serve(self) -> None:
        while True:
            ready = self._wait()
            with self._lock:
                if self._stopping or (not ready and self._waiting > _WAITING):
                    break
            if not ready:
                continue
            try:
                accepted = self._accept()
            except OSError as exc:
                self.error = exc
                self.stop()
                break
            if accepted is None:
                continue
            sock, address = accepted
            with self._lock:
                late = self._stopping or self._watch.ended is not None
                self._waiting -= 1
                spawn = not self._waiting and not late
                self._lock.notify_all()
            if late:  # accepted as the tunnel stopped
                reset(sock)
            else:
                if spawn:
                    self._spawn()
                try:
                    self._run(sock, address)
                except Exception as exc:  # the accept loop's own failure: the tunnel stops
                    self.error = exc
                    self.stop()
                    return
            with self._lock:
                if self._stopping:
                    return
                self._waiting += 1
        self._left()
