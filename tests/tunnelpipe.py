"""Two :class:`~certpair.tunnel.pump.Relay` ends over real TLS on loopback, in this
process: what ``tunnel connect`` and ``tunnel serve`` do per connection, without the
processes, so that a test can compare what each plain end saw (h11's tests are the
model: two ends over one link).

::

    app_a <-tcp-> Relay a (beta, client) <==TLS==> Relay b (alpha, server) <-tcp-> app_b

Every socket is a loopback TCP socket with small kernel buffers (no autotuning), so
that backpressure shows within a few hundred KiB.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from certpair.trusted import client_context, server_context
from certpair.tunnel.link import TlsLink
from certpair.tunnel.pump import Relay
from tests.trustedutil import Devices

WAIT = 10.0
BUFFER = 64 * 1024  # SO_SNDBUF/SO_RCVBUF of every test socket (the kernel doubles it)
LOOPBACK = "127.0.0.1"


def tcp_pair(buffer: int | None = BUFFER) -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets (connecting end, accepted end)."""
    with socket.socket() as listener:
        if buffer is not None:  # inherited by the accepted socket
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        near = socket.socket()
        if buffer is not None:
            near.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        near.settimeout(WAIT)
        near.connect(listener.getsockname())
        listener.settimeout(WAIT)
        far, _ = listener.accept()
    far.settimeout(WAIT)
    return near, far


class Result:
    """What a function run in its own thread returned; calling waits for it (bounded)
    and raises what the function raised."""

    def __init__(self, target: Callable[[], object]) -> None:
        self._done = threading.Event()
        self._box: list[object] = []
        self._target = target
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self._box.append(self._target())
        except BaseException as exc:  # handed to the waiting test
            self._box.append(exc)
        finally:
            self._done.set()

    def __call__(self, timeout: float = WAIT) -> object:
        assert self._done.wait(timeout), "the thread did not finish in time"
        if isinstance(self._box[0], BaseException):
            raise self._box[0]
        return self._box[0]


def in_thread(target: Callable[[], object]) -> Result:
    """Run ``target`` in a thread; call the result to wait for what it returned."""
    return Result(target)


def server_link(devices: Devices, sock: socket.socket) -> TlsLink:
    """alpha's server end of a tunnel connection (the handshake not yet run)."""
    return TlsLink(sock, server_context(devices.home("alpha")), server_side=True)


def client_link(devices: Devices, sock: socket.socket) -> TlsLink:
    """beta's client end of a tunnel connection to alpha (the handshake not yet run)."""
    return TlsLink(sock, client_context(devices.home("beta"), peer="alpha"),
                   server_side=False)


@dataclass
class Pipe:
    """Two relays back to back; ``app_a``/``app_b`` are the plain ends a test drives."""

    a: Relay
    b: Relay
    app_a: socket.socket
    app_b: socket.socket
    ended_a: Result
    ended_b: Result

    def reasons(self, timeout: float = WAIT) -> tuple[object, object]:
        """Why each relay ended (waits, bounded)."""
        return self.ended_a(timeout), self.ended_b(timeout)

    def close(self) -> None:
        for sock in (self.app_a, self.app_b):
            sock.close()
        self.a.cut("test over")
        self.b.cut("test over")


def make_pipe(devices: Devices, *, idle_timeout: float | None = None,
              half_close_timeout: float | None = 30.0) -> Pipe:
    """Handshake alpha and beta over loopback, attach both plain sides, start both
    relays (each in its own thread, as the tunnel runs them)."""
    tls_a, tls_b = tcp_pair()
    link_a, link_b = client_link(devices, tls_a), server_link(devices, tls_b)
    deadline = time.monotonic() + WAIT
    shaken = in_thread(lambda: link_b.handshake(deadline))
    link_a.handshake(deadline)
    shaken()
    relays = [Relay(link, idle_timeout=idle_timeout, half_close_timeout=half_close_timeout)
              for link in (link_a, link_b)]
    apps = []
    for relay in relays:
        app, plain = tcp_pair()
        assert relay.attach(plain)
        apps.append(app)
    ended = [in_thread(relay.run) for relay in relays]
    return Pipe(relays[0], relays[1], apps[0], apps[1], ended[0], ended[1])


def read_all(sock: socket.socket) -> bytes:
    """Everything until EOF (a reset raises)."""
    parts = []
    while data := sock.recv(1 << 16):
        parts.append(data)
    return b"".join(parts)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        data = sock.recv(min(1 << 16, size - got))
        assert data, f"EOF after {got} of {size} bytes"
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def what_the_end_saw(sock: socket.socket) -> str:
    """How a plain end's stream ended: ``"eof"`` (an orderly FIN) or ``"reset"``."""
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


def stalled_after(sock: socket.socket, data: bytes, quiet: float = 1.0) -> int:
    """Write ``data`` without blocking until the socket accepts nothing for ``quiet``
    seconds (the path behind it is full); return how many bytes it took."""
    sock.setblocking(False)
    sent = 0
    view = memoryview(data)
    try:
        while sent < len(data):
            try:
                sent += sock.send(view[sent:sent + (1 << 16)])
            except BlockingIOError:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                if not poller.poll(quiet * 1000):
                    break
    finally:
        sock.settimeout(WAIT)
    return sent
