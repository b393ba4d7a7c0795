"""Default TCP ports and ALPN protocol names (a module of its own so the CLI can show
them without imports)."""

from __future__ import annotations

__all__ = [
    "ALPN_PAIRING", "ALPN_PREFIX", "ALPN_TRUSTED", "PAIRING_PORT", "SERVE_PORT", "TUNNEL_PORT",
]

PAIRING_PORT = 47820
SERVE_PORT = 47821
TUNNEL_PORT = 47822

# TLS ALPN names (docs/PROTOCOL.md §2): they let a connection to the wrong kind of
# certpair port fail right at the handshake with a precise message, instead of a
# silent wait. Clients that offer no ALPN at all are served as before.
ALPN_PREFIX = "certpair/"
ALPN_PAIRING = "certpair/1-pair"
ALPN_TRUSTED = "certpair/1-trusted"
