"""Default TCP ports and ALPN protocol names (a module of its own so the CLI can show
them without imports)."""

from __future__ import annotations

__all__ = [
    "ALPN_PAIRING", "ALPN_PREFIX", "ALPN_SERVE", "ALPN_SERVICES", "ALPN_TUNNEL", "PAIRING_PORT",
    "SERVE_PORT", "TUNNEL_PORT", "alpn_offer", "service_of",
]

PAIRING_PORT = 47820
SERVE_PORT = 47821
TUNNEL_PORT = 47822

# TLS ALPN names (docs/PROTOCOL.md §2), one per kind of certpair port: they let a
# connection to the wrong kind of port fail right at the handshake with a precise
# message, instead of a silent wait or the wrong protocol handed to an application.
# Clients that offer no ALPN at all are served as before.
ALPN_PREFIX = "certpair/"
ALPN_PAIRING = "certpair/1-pair"
ALPN_SERVE = "certpair/1-serve"
ALPN_TUNNEL = "certpair/1-tunnel"
ALPN_SERVICES = (ALPN_PAIRING, ALPN_SERVE, ALPN_TUNNEL)

# Which command listens on each kind of port, for a wrong-port message.
_COMMANDS = {
    ALPN_PAIRING: "certpair pair",
    ALPN_SERVE: "certpair serve",
    ALPN_TUNNEL: "certpair tunnel serve",
}


def alpn_offer(own: str) -> list[str]:
    """What a certpair client offers: its own protocol first, then the trusted services'
    others, so that a trusted server of another kind names itself by selecting its own.

    Never the pairing name for a trusted client: a pairing port refuses a client that
    offers certpair names without it (the ``no_application_protocol`` alert).
    """
    return [own, *(name for name in (ALPN_SERVE, ALPN_TUNNEL) if name != own)]


def service_of(selected: str | None, own: str) -> str | None:
    """The command listening on a port whose ALPN shows it is not ``own``'s kind.

    Args:
        selected: the ALPN protocol the handshake settled on (None: none).
        own: the protocol this client speaks.

    Returns:
        ``"certpair serve"``, ``"certpair tunnel serve"`` or ``"certpair pair"``; None
        when the port is of ``own``'s kind or did not say (no ALPN).
    """
    if selected is None or selected == own:
        return None
    return _COMMANDS.get(selected, f"a server of {selected!r}")
