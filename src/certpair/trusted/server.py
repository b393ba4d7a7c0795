"""The blocking server for paired devices: a thread per connection, only paired devices
let through to the handler.

A connection first holds a slot for unproven connections
(:class:`~certpair.trusted.handshakes.HandshakeSlots`), then runs its handshake and the
peer check (``peer_of``) in its own thread; a refusal is said with a TLS alert and a
brief linger, so the client reads why. Open connections of a device that is unpaired
are cut (:class:`~certpair.trusted.cuts.OpenConnections`).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certpair.addresses import format_address
from certpair.errors import CertpairError
from certpair.ports import cannot_listen
from certpair.store import Peer, TrustStore
from certpair.trusted.client import HANDSHAKE_TIMEOUT, remote_name
from certpair.trusted.contexts import server_context
from certpair.trusted.cuts import OpenConnections
from certpair.trusted.failures import close_notify, refusal_reason
from certpair.trusted.handshakes import DEADLINE as HANDSHAKE_DEADLINE
from certpair.trusted.handshakes import HandshakeSlots, Slot
from certpair.trusted.peers import _store_of, peer_of

__all__ = ["SyncHandler", "TrustedServer", "make_server"]

_LINGER = 2.0

SyncHandler = Callable[[ssl.SSLSocket, Peer], None]


class TrustedServer(socketserver.ThreadingTCPServer):
    """A threading TCP server that lets only paired devices through to its handler.

    A connection first holds a slot for unproven connections
    (:class:`~certpair.trusted.handshakes.HandshakeSlots`: bounded per source and in
    total, expiring with the whole handshake), so idle sockets of an unpaired host
    cannot take the places of paired devices. Once its peer is known, it takes one of
    ``MAX_CONNECTIONS`` (one thread each); beyond that it is closed and reported as
    refused. The listen backlog is deep (1,024, like ``pair``), so a burst does not
    drop a paired device's SYN.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    MAX_CONNECTIONS = 256

    def __init__(self, handler: SyncHandler, address: tuple[str, int],
                 context: ssl.SSLContext, store: Path | TrustStore, timeout: float,
                 on_refused: Callable[[str, str], None] | None) -> None:
        self.handler, self.context, self.store = handler, context, store
        self.io_timeout, self.on_refused = timeout, on_refused
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        self.handshakes = HandshakeSlots(deadline=min(timeout, HANDSHAKE_DEADLINE))
        self.opened = OpenConnections(store)
        super().__init__(address, socketserver.BaseRequestHandler)
        self.opened.start_polling(lambda: not self._closed)

    _closed = False

    def server_close(self) -> None:
        """Stop listening, and stop watching the store for unpaired devices."""
        self._closed = True
        self.handshakes.stop()
        super().server_close()

    def _refused(self, client_address: Any, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(remote_name(client_address), reason)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, if it gets an unproven slot."""
        slot = self.handshakes.admit(remote_name(client_address).rsplit(":", 1)[0], request)
        if isinstance(slot, str):
            self.shutdown_request(request)
            self._refused(client_address, slot)
            return
        threading.Thread(target=self._serve_one, args=(request, client_address, slot),
                         daemon=True, name="certpair-serve-connection").start()

    def process_relayed(self, request: socket.socket, remote: str,
                        settle: Callable[[bool], None], *, budget: int) -> None:
        """Serve a connection glued at a relay (``remote``: ``relay tcp:R:P``).

        Its unproven slot is counted under that label with a budget of its own, never
        against any address's, so connections through a relay cannot starve direct
        ones; ``settle`` is told once whether it proved itself, when its slot is freed.
        """
        slot = self.handshakes.admit(remote, request, per_source=budget, on_free=settle)
        if isinstance(slot, str):
            self.shutdown_request(request)
            self._refused(remote, slot)
            settle(False)
            return
        threading.Thread(target=self._serve_one, args=(request, remote, slot),
                         daemon=True, name="certpair-serve-connection").start()

    def _serve_one(self, request: Any, client_address: Any, slot: Slot) -> None:
        try:
            self._finish(request, client_address, slot)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            slot.leave()  # before the close: a cut never reaches a reused descriptor
            self.shutdown_request(request)

    def _finish(self, request: socket.socket, client_address: Any, slot: Slot) -> None:
        """Run the handshake in the connection's thread, then the handler.

        The handler's exceptions go to ``handle_error``, as in any socketserver.
        """
        request.settimeout(self.io_timeout)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
            peer = peer_of(tls, self.store)
        except (OSError, CertpairError) as exc:  # a damaged store too: never a traceback
            self._refused(client_address, slot.reason or refusal_reason(exc))
            close_notify(tls, _LINGER)  # refused after the handshake: closed on purpose
            _linger(tls, slot.leave)
            return
        slot.prove()  # proven: from here on an authenticated connection
        if not self._slots.acquire(blocking=False):
            self._refused(client_address, "too many connections")
            close_notify(tls, _LINGER)
            _linger(tls, None)
            return
        try:
            with tls, self.opened.track(peer, lambda why: _cut_socket(tls)):
                try:
                    self.handler(tls, peer)
                finally:
                    # close_notify: OpenSSL 3 clients treat a bare TCP close as an error.
                    with contextlib.suppress(OSError, ValueError):
                        tls.settimeout(min(self.io_timeout, _LINGER))
                        tls.unwrap()
        finally:
            self._slots.release()


def _cut_socket(tls: ssl.SSLSocket) -> None:
    """End an open blocking connection: the handler's reads and writes fail or see EOF."""
    # socket.socket's own shutdown: SSLSocket.shutdown would drop the TLS object under
    # the handler's thread; this only ends the TCP connection its reads are waiting on.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(tls, socket.SHUT_RDWR)


def _linger(tls: ssl.SSLSocket, before_close: Callable[[], None] | None) -> None:
    # Closing with unread bytes (a TLS 1.3 client sends data right after its Finished)
    # makes the kernel reset the connection, which can destroy the alert just sent;
    # half-close and drain briefly instead, so the client reads why it was refused.
    with socket.socket(fileno=tls.detach()) as raw:
        deadline = time.monotonic() + _LINGER
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                raw.settimeout(left)
                if not raw.recv(16384):
                    break
        if before_close is not None:
            before_close()


def make_server(
    handler: SyncHandler, host: str, port: int, home: Path, *,
    context: ssl.SSLContext | None = None, timeout: float = HANDSHAKE_TIMEOUT,
    on_refused: Callable[[str, str], None] | None = None,
) -> TrustedServer:
    """Make a blocking server for paired devices; run it with ``serve_forever()``.

    A device that is unpaired while its connection is open is cut (its socket is shut
    down, so the handler's reads end); ``server_close()`` stops the watch.

    Args:
        handler: called as ``handler(tls_socket, peer)`` in a thread per connection;
            the socket is closed (with close_notify) after it.
        host: address to listen on.
        port: TCP port; 0 picks a free one (see ``server.server_address``).
        home: certpair's home directory.
        context: a server context to reuse (default: a new one).
        timeout: seconds for the handshake and every read or write.
        on_refused: called with the remote address and :func:`refusal_reason` for
            each connection that is not let through (from the connection's thread).

    Returns:
        The bound server.

    Raises:
        NetworkError: cannot listen.
    """
    tls = context or server_context(home)
    try:
        return TrustedServer(handler, (host, port), tls, _store_of(tls, home), timeout,
                             on_refused)
    except OSError as exc:
        raise cannot_listen(format_address(host, port), exc) from exc
