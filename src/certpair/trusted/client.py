"""Connecting to a paired device, blocking; and the checks every trusted client shares.

:func:`connect` dials, runs the handshake and checks the peer against the store
(``peer_of``), pinned to one device if asked; :func:`measure_handshake` times that set-up
for the benchmarks. The asyncio client (:mod:`certpair.trusted.streams`) uses the same
``client_side`` and ``expect_peer``. Failures are named by
:func:`~certpair.trusted.failures.connection_error`.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

from certpair.addresses import format_address
from certpair.errors import CertpairError, NetworkError
from certpair.ports import SERVE_PORT
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted.contexts import NotPaired, client_context
from certpair.trusted.failures import connection_error
from certpair.trusted.peers import _store_of, peer_of

__all__ = [
    "DEFAULT_SERVE_PORT",
    "HANDSHAKE_TIMEOUT",
    "client_side",
    "connect",
    "expect_peer",
    "measure_handshake",
    "remote_name",
]

DEFAULT_SERVE_PORT = SERVE_PORT
HANDSHAKE_TIMEOUT = 10.0


def remote_name(peername: Any) -> str:
    """How errors and refusals name the other end: ``HOST:PORT``, a label given as a
    string (``relay tcp:R:P``), or ``unknown``."""
    if isinstance(peername, str):
        return peername
    if isinstance(peername, tuple) and len(peername) >= 2:
        host = str(peername[0])
        return format_address(host, peername[1])
    return "unknown"


def client_side(
    host: str, port: int, home: Path, context: ssl.SSLContext | None,
    peer: str | Peer | None,
) -> tuple[ssl.SSLContext, str]:
    """The client context to connect with (a new one unless given, pinned to ``peer`` if
    one is named) and how errors name the server."""
    return context or client_context(home, peer=peer), remote_name((host, port))


def expect_peer(found: Peer, peer: str | Peer | None, context: ssl.SSLContext, home: Path) -> Peer:
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


def _dial(host: str, port: int, timeout: float) -> socket.socket:
    raw = socket.create_connection((host, port), timeout=timeout)
    # Small TLS records back to back would otherwise wait for delayed ACKs (~40 ms).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def connect(
    host: str, port: int, home: Path, *, context: ssl.SSLContext | None = None,
    timeout: float = HANDSHAKE_TIMEOUT, peer: str | Peer | None = None,
    sock: socket.socket | None = None, remote: str | None = None,
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
        sock: a socket already connected to the device by another transport (a
            relay); TLS runs over it exactly as over a direct connection.
        remote: how messages name the other end (default ``HOST:PORT``; through a
            relay, ``relay tcp:R:P``: the relay's address is not the device's).

    Returns:
        The TLS socket (its timeout stays set) and the verified peer.

    Raises:
        NotPaired: the server is not a paired device (or not ``peer``).
        PeerNotFound, AmbiguousPeer: ``peer`` names no paired device, or several.
        Expired: the connection or handshake timed out.
        NetworkError: the device cannot be reached or the handshake failed.
    """
    context, shown = client_side(host, port, home, context, peer)
    remote = remote or shown
    try:
        raw = _dial(host, port, timeout) if sock is None else sock
        raw.settimeout(timeout)
    except OSError as exc:
        raise connection_error(exc, remote) from exc
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
    except OSError as exc:
        raw.close()
        raise connection_error(exc, remote) from exc
    try:
        return tls, expect_peer(peer_of(tls, _store_of(context, home)), peer, context, home)
    except CertpairError:
        tls.close()
        raise


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
    remote = remote_name((host, port))
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
