"""Connections and servers for paired devices: asyncio streams and blocking sockets.

Every helper checks the peer against the store after the handshake (``peer_of``) and
reports failures through :func:`~certpair.trusted.failures.connection_error` and
:func:`~certpair.trusted.failures.refusal_reason`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from certpair.addresses import format_address
from certpair.errors import CertpairError, NetworkError
from certpair.ports import SERVE_PORT, cannot_listen
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted.contexts import (
    REFUSALS,
    NotPaired,
    client_context,
    server_context,
)
from certpair.trusted.cuts import OpenConnections
from certpair.trusted.failures import close_notify, connection_error, refusal_reason
from certpair.trusted.handshakes import DEADLINE as HANDSHAKE_DEADLINE
from certpair.trusted.handshakes import HandshakeSlots, Slot
from certpair.trusted.peers import _store_of, peer_of

__all__ = [
    "DEFAULT_SERVE_PORT",
    "HANDSHAKE_TIMEOUT",
    "AsyncHandler",
    "SyncHandler",
    "TrustedServer",
    "connect",
    "make_server",
    "measure_handshake",
    "open_connection",
    "start_server",
]

DEFAULT_SERVE_PORT = SERVE_PORT
HANDSHAKE_TIMEOUT = 10.0
_LINGER = 2.0

AsyncHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
SyncHandler = Callable[[ssl.SSLSocket, Peer], None]


def _address(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host = str(peername[0])
        return format_address(host, peername[1])
    return "unknown"


def _client_side(
    host: str, port: int, home: Path, context: ssl.SSLContext | None,
    peer: str | Peer | None,
) -> tuple[ssl.SSLContext, str]:
    """The client context to connect with (a new one unless given, pinned to ``peer`` if
    one is named) and how errors name the server."""
    return context or client_context(home, peer=peer), _address((host, port))


def _expect(found: Peer, peer: str | Peer | None, context: ssl.SSLContext, home: Path) -> Peer:
    """Check a caller-supplied context's server against the ``peer`` asked for."""
    if peer is None:
        return found
    if isinstance(peer, str):
        store = _store_of(context, home)
        if isinstance(store, TrustStore):
            peer = store.find_peer(peer)
        else:
            with open_store(store) as opened:
                peer = opened.find_peer(peer)
    same_device = bool(found.device_id) and found.device_id == peer.device_id  # rotated
    if found.fingerprint != peer.fingerprint and not same_device:
        raise NotPaired(f"the server is {found.name} ({found.fingerprint}), not {peer.name}")
    return found


async def open_connection(
    host: str, port: int, home: Path, *, context: ssl.SSLContext | None = None,
    timeout: float = HANDSHAKE_TIMEOUT, peer: str | Peer | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Peer]:
    """Connect to a paired device over mutual TLS.

    In TLS 1.3 the server judges this device's certificate after the client's side of
    the handshake is done, so a server that refuses this device makes the *first read*
    (or ``drain``) raise :class:`NotPaired` ("... refused this device: it is not paired
    there"); any other TLS or socket failure met while reading is a certpair error too.
    Bound your reads, e.g. with ``asyncio.timeout``.

    Args:
        host: the device's address.
        port: its port.
        home: certpair's home directory.
        context: a client context to reuse (default: a new one).
        timeout: seconds for connecting and the handshake.
        peer: accept only this paired device as the server (name, fingerprint or
            prefix, or a Peer); without ``context`` the handshake itself is pinned.

    Returns:
        The streams and the verified peer.

    Raises:
        NotPaired: the server is not a paired device (or not ``peer``).
        PeerNotFound, AmbiguousPeer: ``peer`` names no paired device, or several.
        Expired: the connection or handshake timed out.
        NetworkError: the device cannot be reached or the handshake failed.
    """
    context, remote = _client_side(host, port, home, context, peer)
    loop = asyncio.get_running_loop()
    reader = _TrustedReader(remote, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: protocol, host, port, ssl=context, ssl_handshake_timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise connection_error(exc, remote) from exc
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    try:
        found = peer_of(writer.get_extra_info("ssl_object"), _store_of(context, home))
        return reader, writer, _expect(found, peer, context, home)
    except CertpairError:
        writer.close()
        raise


async def start_server(
    handler: AsyncHandler, host: str, port: int, home: Path, *,
    context: ssl.SSLContext | None = None, timeout: float = HANDSHAKE_TIMEOUT,
    on_refused: Callable[[str, str], None] | None = None,
) -> asyncio.Server:
    """Listen for paired devices; call ``handler(reader, writer, peer)`` for each one.

    A refused client receives the TLS alert, so its first read fails with
    :class:`NotPaired`. A device that is unpaired while its connection is open is cut:
    the handler's next read raises :class:`NotPaired` ("... was unpaired").

    Args:
        handler: coroutine run per accepted connection; the writer is closed after it.
        host: address to listen on.
        port: TCP port; 0 picks a free one (see ``server.sockets``).
        home: certpair's home directory.
        context: a server context to reuse (default: a new one).
        timeout: seconds allowed for each handshake.
        on_refused: called with the remote address and :func:`refusal_reason` for
            each connection that is not let through. (asyncio sends no TLS alert.)

    Returns:
        The listening server.

    Raises:
        NetworkError: cannot listen.
    """
    tls = context or server_context(home)
    store = _store_of(tls, home)
    opened = OpenConnections(store)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = _address(writer.get_extra_info("peername"))
        refusals: list[BaseException] = []
        REFUSALS.set(refusals)  # this task's own context: see contexts._CheckedObject
        try:
            try:
                async with asyncio.timeout(timeout):
                    await writer.start_tls(tls)
                peer = peer_of(writer.get_extra_info("ssl_object"), store)
            except (OSError, TimeoutError, NotPaired) as exc:
                if on_refused is not None:
                    on_refused(remote, refusal_reason(refusals[0] if refusals else exc))
                return
            loop = asyncio.get_running_loop()

            def cut(why: NotPaired) -> None:  # called from the watch's thread
                loop.call_soon_threadsafe(_cut_stream, reader, writer, why)

            with opened.track(peer, cut):
                await handler(reader, writer, peer)
        except asyncio.CancelledError:
            return  # the server is shutting down: nothing to report
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    try:
        server = await asyncio.start_server(accept, host, port)
    except OSError as exc:
        raise cannot_listen(format_address(host, port), exc) from exc
    opened.start_polling(server.is_serving)
    return server


def _cut_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                why: NotPaired) -> None:
    """End an open asyncio connection: the handler's next read raises ``why``."""
    reader.set_exception(why)
    writer.transport.abort()


def _dial(host: str, port: int, timeout: float) -> socket.socket:
    raw = socket.create_connection((host, port), timeout=timeout)
    # Small TLS records back to back would otherwise wait for delayed ACKs (~40 ms).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def connect(
    host: str, port: int, home: Path, *, context: ssl.SSLContext | None = None,
    timeout: float = HANDSHAKE_TIMEOUT, peer: str | Peer | None = None,
) -> tuple[ssl.SSLSocket, Peer]:
    """Connect to a paired device over mutual TLS (blocking).

    Args:
        host: the device's address.
        port: its port.
        home: certpair's home directory.
        context: a client context to reuse (default: a new one).
        timeout: seconds for connecting, the handshake and every later read or write.
        peer: accept only this paired device as the server (as for
            :func:`open_connection`).

    Returns:
        The TLS socket (its timeout stays set) and the verified peer.

    Raises:
        NotPaired: the server is not a paired device (or not ``peer``).
        PeerNotFound, AmbiguousPeer: ``peer`` names no paired device, or several.
        Expired: the connection or handshake timed out.
        NetworkError: the device cannot be reached or the handshake failed.
    """
    context, remote = _client_side(host, port, home, context, peer)
    try:
        raw = _dial(host, port, timeout)
    except OSError as exc:
        raise connection_error(exc, remote) from exc
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
    except OSError as exc:
        raw.close()
        raise connection_error(exc, remote) from exc
    try:
        return tls, _expect(peer_of(tls, _store_of(context, home)), peer, context, home)
    except CertpairError:
        tls.close()
        raise


class _TrustedReader(asyncio.StreamReader):
    """A stream reader whose TLS and socket failures are certpair's verdicts: a server's
    refusal after the TLS 1.3 handshake reads as :class:`NotPaired`, not as an
    ``ssl.SSLError`` (or nothing at all)."""

    def __init__(self, remote: str, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._remote = remote

    def set_exception(self, exc: Exception) -> None:
        """Store the verdict on ``exc`` for the next read to raise."""
        if isinstance(exc, OSError):
            exc = connection_error(exc, self._remote)
        super().set_exception(exc)


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
            self.on_refused(_address(client_address), reason)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, if it gets an unproven slot."""
        slot = self.handshakes.admit(_address(client_address).rsplit(":", 1)[0], request)
        if isinstance(slot, str):
            self.shutdown_request(request)
            self._refused(client_address, slot)
            return
        threading.Thread(target=self._serve_one, args=(request, client_address, slot),
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
        slot.leave()  # proven: from here on an authenticated connection
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


def measure_handshake(
    host: str, port: int, context: ssl.SSLContext, *, probe: bytes = b"\n",
    timeout: float = HANDSHAKE_TIMEOUT,
) -> float:
    """Time one trusted connection set-up as a client sees it, for benchmarks.

    From the TCP connect to the server's first byte after ``probe``: a TLS 1.3 client
    is done before the server has checked its certificate, so the handshake alone
    would miss that check. ``certpair serve`` answers every line.

    Args:
        host: the server's address.
        port: its port.
        context: the client context (build it once, outside the measurement).
        probe: bytes to send after the handshake.
        timeout: seconds for the whole exchange.

    Returns:
        Seconds elapsed.

    Raises:
        NotPaired, Expired, NetworkError: as for :func:`connect`, or the server sent
            nothing.
    """
    remote = _address((host, port))
    start = time.perf_counter()
    try:
        with (_dial(host, port, timeout) as raw,
              context.wrap_socket(raw, server_hostname=host) as tls):
            tls.sendall(probe)
            if not tls.recv(1):
                raise NetworkError(f"{remote} closed the connection without answering")
    except OSError as exc:
        raise connection_error(exc, remote) from exc
    return time.perf_counter() - start
