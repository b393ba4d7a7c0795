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

from typing import TYPE_CHECKING, Any

from certpair.trusted.contexts import (
    NotPaired,
    PeerRefused,
    TrustedContext,
    client_context,
    server_context,
)
from certpair.trusted.explain import explain_certificate
from certpair.trusted.failures import (
    check_service,
    connection_error,
    refusal_reason,
    why_refused,
)
from certpair.trusted.peers import admitted_peer, peer_of, presented_fingerprint

if TYPE_CHECKING:
    from certpair.trusted.client import (
        DEFAULT_SERVE_PORT,
        HANDSHAKE_TIMEOUT,
        connect,
        measure_handshake,
    )
    from certpair.trusted.server import SyncHandler, TrustedServer, make_server
    from certpair.trusted.streams import AsyncHandler, open_connection, start_server

# The helpers are loaded on first use, so that a user of the contexts alone (certpair
# tunnel) does without them; only the asyncio ones (streams) import asyncio (~5 MB,
# ~10 ms).
_CLIENT = frozenset({"DEFAULT_SERVE_PORT", "HANDSHAKE_TIMEOUT", "connect", "measure_handshake"})
_SERVER = frozenset({"SyncHandler", "TrustedServer", "make_server"})
_STREAMS = frozenset({"AsyncHandler", "open_connection", "start_server"})


def __getattr__(name: str) -> Any:
    # Static imports (not importlib), so that lint-imports sees them.
    if name in _CLIENT:
        from certpair.trusted import client  # noqa: PLC0415

        return getattr(client, name)
    if name in _SERVER:
        from certpair.trusted import server  # noqa: PLC0415

        return getattr(server, name)
    if name in _STREAMS:
        from certpair.trusted import streams  # noqa: PLC0415

        return getattr(streams, name)
    raise AttributeError(f"module 'certpair.trusted' has no attribute {name!r}")


__all__ = [
    "DEFAULT_SERVE_PORT",
    "HANDSHAKE_TIMEOUT",
    "AsyncHandler",
    "NotPaired",
    "PeerRefused",
    "SyncHandler",
    "TrustedContext",
    "TrustedServer",
    "admitted_peer",
    "check_service",
    "client_context",
    "connect",
    "connection_error",
    "explain_certificate",
    "make_server",
    "measure_handshake",
    "open_connection",
    "peer_of",
    "presented_fingerprint",
    "refusal_reason",
    "server_context",
    "start_server",
    "why_refused",
]
