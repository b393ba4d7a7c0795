"""Trusted connections after pairing: mutual TLS that admits paired devices only.

:func:`server_context` and :func:`client_context` return standard ``ssl.SSLContext``
objects (TLS 1.3 only, mutual, no host-name check) whose trust anchors are exactly the
peer certificates in the store, so anything that takes a context talks only to paired
devices. They follow the store without a restart: every change to the peers bumps
:meth:`TrustStore.peers_version`, which each new connection reads. A peer added is
loaded into the current context; a peer removed needs a fresh context (OpenSSL cannot
drop an anchor), which takes over in ``wrap_socket``/``wrap_bio`` and, on servers, in
the ClientHello callback (``sni_callback``, called with or without SNI). Servers issue
no session tickets. The helpers (:func:`open_connection`, :func:`start_server`,
:func:`connect`, :func:`make_server`) also check every peer against the store after the
handshake (:func:`peer_of`). Details and limits: docs/TRUST.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from certpair.errors import (
    BadInput,
    CertpairError,
    Expired,
    LocalStateError,
    NetworkError,
    PairingFailed,
)
from certpair.identity import Identity, fingerprint, load_identity
from certpair.store import Peer, StoreUnusable, TrustStore, open_store

__all__ = [
    "DEFAULT_SERVE_PORT",
    "HANDSHAKE_TIMEOUT",
    "AsyncHandler",
    "NotPaired",
    "SyncHandler",
    "TrustedContext",
    "TrustedServer",
    "client_context",
    "connect",
    "connection_error",
    "make_server",
    "measure_handshake",
    "open_connection",
    "peer_of",
    "refusal_reason",
    "server_context",
    "start_server",
]

DEFAULT_SERVE_PORT = 47821
HANDSHAKE_TIMEOUT = 10.0
_LINGER = 2.0

# Alerts a TLS 1.3 client reads when the server did not accept its certificate.
_REFUSED_ALERTS = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_ACCESS_DENIED",
})
# Settings a caller may change on a context; a fresh context copies them, in this order.
_COPIED = ("options", "minimum_version", "maximum_version", "verify_flags", "check_hostname",
           "verify_mode", "keylog_filename")

AsyncHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
SyncHandler = Callable[[ssl.SSLSocket, Peer], None]


class NotPaired(PairingFailed):
    """The other side is not a paired device, or it does not trust this one."""


class TrustedContext(ssl.SSLContext):
    """An ``SSLContext`` that follows the trust store (see the module documentation)."""

    _certpair: _Anchors

    def wrap_socket(
        self, sock: socket.socket, server_side: bool = False,
        do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Wrap ``sock`` with the context holding the store's current peers."""
        latest = self._certpair.latest()
        wrap = super().wrap_socket if latest is self else latest.wrap_socket
        return wrap(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                    server_hostname, session)

    def wrap_bio(
        self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
        server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap the BIO pair with the context holding the store's current peers."""
        latest = self._certpair.latest()
        wrap = super().wrap_bio if latest is self else latest.wrap_bio
        return wrap(incoming, outgoing, server_side, server_hostname, session)

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        """Set ALPN here and on every context that later replaces this one."""
        self._certpair.remember(self, "set_alpn_protocols", list(alpn_protocols))


def _load_anchors(context: ssl.SSLContext, certs: Iterable[bytes]) -> None:
    data = b"".join(certs)
    if not data:
        return
    try:
        context.load_verify_locations(cadata=data)
    except (ssl.SSLError, ValueError) as exc:
        raise StoreUnusable("a peer certificate in the trust store is unreadable") from exc


class _Anchors:
    """The store, and the contexts of one factory call that follow it."""

    def __init__(self, home: Path, *, server_side: bool) -> None:
        self.identity: Identity = load_identity(home)
        self.store = open_store(home)
        self.server_side = server_side
        self._lock = threading.RLock()
        self._version = -1
        self._trusted: frozenset[str] = frozenset()
        self._calls: dict[str, Any] = {}
        self.first: TrustedContext | None = None
        self.current: TrustedContext | None = None

    def latest(self) -> TrustedContext:
        """The context for the next connection, rebuilt or extended if the peers changed."""
        version = self.store.peers_version()
        with self._lock:
            if version != self._version or self.current is None:
                # Read the version first: a change racing with this refresh shows up as a
                # newer version next time, never as a missed one.
                peers = {p.fingerprint: p.cert_der for p in self.store.peers()}
                if self.current is None or self._trusted - peers.keys():
                    self.current = self._build(peers.values())
                else:
                    _load_anchors(self.current,
                                  (der for fp, der in peers.items() if fp not in self._trusted))
                self._trusted, self._version = frozenset(peers), version
            return self.current

    def remember(self, context: TrustedContext, method: str, argument: Any) -> None:
        """Apply a setting now and to every context built later."""
        with self._lock:
            self._calls[method] = argument
            for each in {id(c): c for c in (context, self.first, self.current) if c}.values():
                getattr(ssl.SSLContext, method)(each, argument)

    def _build(self, anchors: Iterable[bytes]) -> TrustedContext:
        side = ssl.PROTOCOL_TLS_SERVER if self.server_side else ssl.PROTOCOL_TLS_CLIENT
        context = TrustedContext(side)
        context._certpair = self
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        # Peer certificates are self-signed leaves (CA:FALSE); they are the anchors.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        try:
            context.load_cert_chain(self.identity.cert_path, self.identity.key_path)
        except (OSError, ssl.SSLError) as exc:
            raise LocalStateError("cannot load this device's certificate and key") from exc
        if self.server_side:
            context.num_tickets = 0  # no resumption: every connection shows its certificate
            context.sni_callback = self._on_client_hello
        _load_anchors(context, anchors)
        if self.first is None:
            self.first = context
        else:
            for name in _COPIED:
                setattr(context, name, getattr(self.first, name))
            for method, argument in self._calls.items():
                getattr(ssl.SSLContext, method)(context, argument)
        return context

    def _on_client_hello(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        try:
            latest = self.latest()
        except CertpairError:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR  # fail closed
        if connection.context is not latest:
            connection.context = latest
        return None


def server_context(home: Path) -> TrustedContext:
    """Return a server context that accepts exactly the paired devices of ``home``.

    Args:
        home: certpair's home directory (identity and trust store).

    Returns:
        A context that requires a client certificate and follows the store.

    Raises:
        NotInitialised: no identity in ``home``.
        LocalStateError: the identity or the store is unusable.
    """
    return _Anchors(home, server_side=True).latest()


def client_context(home: Path) -> TrustedContext:
    """Return a client context that accepts exactly the paired devices of ``home``.

    Args:
        home: certpair's home directory (identity and trust store).

    Returns:
        A context that presents this device's certificate and follows the store.

    Raises:
        NotInitialised: no identity in ``home``.
        LocalStateError: the identity or the store is unusable.
    """
    return _Anchors(home, server_side=False).latest()


def peer_of(
    connection: ssl.SSLSocket | ssl.SSLObject, home_or_store: Path | TrustStore | None = None
) -> Peer:
    """Return the paired device whose certificate this connection's peer presented.

    Args:
        connection: a TLS connection after its handshake.
        home_or_store: certpair's home directory, or an open trust store; may be left
            out when the connection was made with one of this module's contexts.

    Returns:
        The stored peer with that certificate's fingerprint.

    Raises:
        NotPaired: no certificate, or one that belongs to no paired device.
        BadInput: no store given, and the connection's context is not certpair's.
        LocalStateError: the store is unusable.
    """
    der = connection.getpeercert(binary_form=True)
    if not der:
        raise NotPaired("the other side presented no certificate")
    fp = fingerprint(der)
    if home_or_store is None:
        if not isinstance(connection.context, TrustedContext):
            raise BadInput("peer_of needs the certpair home for a context not made by certpair")
        home_or_store = connection.context._certpair.store
    if isinstance(home_or_store, TrustStore):
        peer = home_or_store.peer(fp)
    else:
        with open_store(home_or_store) as store:
            peer = store.peer(fp)
    if peer is None:
        raise NotPaired(f"not a paired device: {fp}")
    return peer


def _store_of(context: ssl.SSLContext, home: Path) -> Path | TrustStore:
    return context._certpair.store if isinstance(context, TrustedContext) else home


def connection_error(error: BaseException, remote: str) -> CertpairError:
    """Translate a client-side socket or TLS failure into a certpair error.

    Args:
        error: what connecting, the handshake or a read raised.
        remote: ``host:port`` for the message.

    Returns:
        NotPaired if a side rejected the other's certificate, Expired for a timeout,
        NetworkError otherwise.
    """
    if isinstance(error, CertpairError):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        return NotPaired(f"{remote} is not a paired device")
    if isinstance(error, ssl.SSLError) and error.reason in _REFUSED_ALERTS:
        return NotPaired(f"{remote} refused this device: it is not paired there")
    if isinstance(error, TimeoutError):
        return Expired(f"{remote} did not answer in time")
    if isinstance(error, ssl.SSLError):
        return NetworkError(f"TLS with {remote} failed: {error.reason or error}")
    if isinstance(error, OSError):
        return NetworkError(f"cannot reach {remote}: {error.strerror or error}")
    return NetworkError(f"the connection to {remote} failed")


def refusal_reason(error: BaseException) -> str:
    """Say in a few words why a server refused a connection (for logs; no secrets).

    Args:
        error: what the server's handshake or :func:`peer_of` raised.

    Returns:
        A short reason such as ``not a paired device``.
    """
    if isinstance(error, NotPaired | ssl.SSLCertVerificationError):
        return "not a paired device"
    if isinstance(error, TimeoutError):
        return "handshake timed out"
    if isinstance(error, ssl.SSLError):
        if error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no client certificate"
        if error.reason in _REFUSED_ALERTS:
            return "the other device does not trust this one"
        return f"TLS handshake failed: {(error.reason or 'error').lower().replace('_', ' ')}"
    return "connection lost during the handshake"


def _address(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host = str(peername[0])
        return f"[{host}]:{peername[1]}" if ":" in host else f"{host}:{peername[1]}"
    return "unknown"


async def open_connection(
    host: str, port: int, home: Path, *, context: ssl.SSLContext | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Peer]:
    """Connect to a paired device over mutual TLS.

    In TLS 1.3 a server that refuses this device makes the first read fail (see
    :func:`connection_error`). Bound your reads, e.g. with ``asyncio.timeout``.

    Args:
        host: the device's address.
        port: its port.
        home: certpair's home directory.
        context: a client context to reuse (default: a new one).
        timeout: seconds for connecting and the handshake.

    Returns:
        The streams and the verified peer.

    Raises:
        NotPaired: the server is not a paired device.
        Expired: the connection or handshake timed out.
        NetworkError: the device cannot be reached or the handshake failed.
    """
    context = context or client_context(home)
    remote = _address((host, port))
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, ssl_handshake_timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise connection_error(exc, remote) from exc
    try:
        peer = peer_of(writer.get_extra_info("ssl_object"), _store_of(context, home))
    except CertpairError:
        writer.close()
        raise
    return reader, writer, peer


async def start_server(
    handler: AsyncHandler, host: str, port: int, home: Path, *,
    context: ssl.SSLContext | None = None, timeout: float = HANDSHAKE_TIMEOUT,
    on_refused: Callable[[str, str], None] | None = None,
) -> asyncio.Server:
    """Listen for paired devices; call ``handler(reader, writer, peer)`` for each one.

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

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = _address(writer.get_extra_info("peername"))
        try:
            try:
                async with asyncio.timeout(timeout):
                    await writer.start_tls(tls)
                peer = peer_of(writer.get_extra_info("ssl_object"), store)
            except (OSError, TimeoutError, NotPaired) as exc:
                if on_refused is not None:
                    on_refused(remote, refusal_reason(exc))
                return
            await handler(reader, writer, peer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    try:
        return await asyncio.start_server(accept, host, port)
    except OSError as exc:
        raise NetworkError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _dial(host: str, port: int, timeout: float) -> socket.socket:
    raw = socket.create_connection((host, port), timeout=timeout)
    # Small TLS records back to back would otherwise wait for delayed ACKs (~40 ms).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def connect(
    host: str, port: int, home: Path, *, context: ssl.SSLContext | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> tuple[ssl.SSLSocket, Peer]:
    """Connect to a paired device over mutual TLS (blocking).

    Args:
        host: the device's address.
        port: its port.
        home: certpair's home directory.
        context: a client context to reuse (default: a new one).
        timeout: seconds for connecting, the handshake and every later read or write.

    Returns:
        The TLS socket (its timeout stays set) and the verified peer.

    Raises:
        NotPaired: the server is not a paired device.
        Expired: the connection or handshake timed out.
        NetworkError: the device cannot be reached or the handshake failed.
    """
    context = context or client_context(home)
    remote = _address((host, port))
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
        return tls, peer_of(tls, _store_of(context, home))
    except CertpairError:
        tls.close()
        raise


class TrustedServer(socketserver.ThreadingTCPServer):
    """A threading TCP server that lets only paired devices through to its handler."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: SyncHandler, address: tuple[str, int],
                 context: ssl.SSLContext, store: Path | TrustStore, timeout: float,
                 on_refused: Callable[[str, str], None] | None) -> None:
        self.handler, self.context, self.store = handler, context, store
        self.io_timeout, self.on_refused = timeout, on_refused
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, socketserver.BaseRequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Run the handshake in the connection's thread, then the handler.

        The handler's exceptions go to ``handle_error``, as in any socketserver.
        """
        request.settimeout(self.io_timeout)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
            peer = peer_of(tls, self.store)
        except (OSError, NotPaired) as exc:
            if self.on_refused is not None:
                self.on_refused(_address(client_address), refusal_reason(exc))
            _linger(tls)
            return
        with tls:
            try:
                self.handler(tls, peer)
            finally:
                # close_notify: OpenSSL 3 clients treat a bare TCP close as an error.
                with contextlib.suppress(OSError, ValueError):
                    tls.settimeout(min(self.io_timeout, _LINGER))
                    tls.unwrap()


def _linger(tls: ssl.SSLSocket) -> None:
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


def make_server(
    handler: SyncHandler, host: str, port: int, home: Path, *,
    context: ssl.SSLContext | None = None, timeout: float = HANDSHAKE_TIMEOUT,
    on_refused: Callable[[str, str], None] | None = None,
) -> TrustedServer:
    """Make a blocking server for paired devices; run it with ``serve_forever()``.

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
        raise NetworkError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


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
