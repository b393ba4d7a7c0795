"""Trusted connections after pairing: mutual TLS that admits paired devices only.

:func:`server_context` and :func:`client_context` return standard ``ssl.SSLContext``
objects (TLS 1.3 only, mutual, no host-name check) whose trust anchors are exactly the
peer certificates in the store, looked up per handshake in the store's anchor directory
(``HOME/anchors``), so anything that takes a context talks only to paired devices.
Every connection they make checks after its handshake that the peer's certificate is
itself a stored, unflagged peer (:class:`PeerRefused` otherwise): exact-leaf trust.
``client_context(home, peer=...)`` trusts one device only. The contexts follow the
store without a restart: every change to the peers bumps
:meth:`TrustStore.peers_version`, which each new connection reads, and a fresh context
(a few milliseconds at any size) takes over in ``wrap_socket``/``wrap_bio`` and, on
servers, in the ClientHello callback (``sni_callback``, called with or without SNI).
Servers issue no session tickets. The helpers (:func:`open_connection`,
:func:`start_server`, :func:`connect`, :func:`make_server`) also look every peer up
after the handshake (:func:`peer_of`). Details and limits: docs/TRUST.md.
"""

from __future__ import annotations

from certpair.trusted.contexts import (
    NotPaired,
    PeerRefused,
    TrustedContext,
    client_context,
    peer_of,
    server_context,
)
from certpair.trusted.failures import connection_error, refusal_reason, why_refused
from certpair.trusted.streams import (
    DEFAULT_SERVE_PORT,
    HANDSHAKE_TIMEOUT,
    AsyncHandler,
    SyncHandler,
    TrustedServer,
    connect,
    make_server,
    measure_handshake,
    open_connection,
    start_server,
)

__all__ = [
    "DEFAULT_SERVE_PORT",
    "HANDSHAKE_TIMEOUT",
    "AsyncHandler",
    "NotPaired",
    "PeerRefused",
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
    "why_refused",
]
