"""Default TCP ports and ALPN protocol names (a module of its own so the CLI can show
them without imports), and the words for a port or address that cannot be used."""

from __future__ import annotations

import errno
import os

from certpair.errors import NetworkError

__all__ = [
    "ALPN_PAIRING", "ALPN_PREFIX", "ALPN_SERVE", "ALPN_SERVICES", "ALPN_TUNNEL", "PAIRING_PORT",
    "SERVE_PORT", "TUNNEL_PORT", "alpn_offer", "cannot_listen", "cannot_reach", "no_such_name",
    "service_of",
]

# Below every common range of ports for outgoing connections (Linux 32768-60999,
# FreeBSD 10000-65535, macOS, NetBSD and Windows 49152-65535), so an outgoing
# connection never holds them when `pair`/`serve`/`tunnel serve` start; unassigned in
# IANA's registry (4489-4499 were free when chosen). docs/PROTOCOL.md §2.
PAIRING_PORT = 4490
SERVE_PORT = 4491
TUNNEL_PORT = 4492

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


# One wording per cause, whatever the command (`pair`, `serve`, `tunnel serve`, `join`,
# `ping`, `sync`, `tunnel connect`): the cause in words, then what to do next. Python's
# own texts ("Connect call failed ('127.0.0.1', 4490)") name internals.
_LISTEN_HINTS = {
    errno.EADDRINUSE: "the port is already in use (another program, or another certpair "
                      "command); choose another with --port",
    errno.EACCES: "permission denied (ports below 1024 need privileges); choose another "
                  "with --port",
    errno.EADDRNOTAVAIL: "this host has no such address; give one of its own with --listen",
}
_REACH_HINTS = {
    errno.ECONNREFUSED: "nothing is listening on that port; check the address and port, "
                        "and that certpair is running on the other device",
    errno.EHOSTUNREACH: "no route to that host; check the address, and that both devices "
                        "are on networks that reach each other",
    errno.ENETUNREACH: "no route to that network; check the address, and that this "
                       "device is connected",
    errno.ETIMEDOUT: "the other device did not answer; check the address, and that no "
                     "firewall drops the connection",
    errno.ECONNRESET: "the connection was cut by the other side",
}


# A relay is not "certpair on the other device": what to check instead.
_RELAY_HINTS = {
    errno.ECONNREFUSED: "nothing is listening on that port; check the relay's address "
                        "and port, and that the relay is running there",
    errno.ETIMEDOUT: "the relay did not answer; check its address, and that no firewall "
                     "drops the connection",
}
# socket loads when an error is explained: every command imports this module for its
# port numbers at start (``--help`` too).


def _name_error(error: BaseException | None) -> bool:
    """Whether ``error`` is getaddrinfo's (its numbers are negative, not errno values)."""
    import socket  # noqa: PLC0415  # see above

    return isinstance(error, socket.gaierror)


def _no_such_name(error: OSError) -> bool:
    """getaddrinfo's "no such name" (EAI_NONAME, EAI_NODATA)."""
    import socket  # noqa: PLC0415  # see above

    return error.errno in {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def _cause(error: OSError) -> str:
    if _name_error(error):  # a name: os.strerror says "unknown error -2"
        if _no_such_name(error):
            return "no such host: the name does not resolve"
        return (error.strerror or str(error)).lower()
    if error.errno:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


def cannot_listen(address: str, error: OSError) -> NetworkError:
    """The error of a listener that cannot be opened on ``address`` (``HOST:PORT``)."""
    hint = _LISTEN_HINTS.get(error.errno or 0)
    return NetworkError(f"cannot listen on {address}: {hint or _cause(error)}")


def cannot_reach(remote: str, error: OSError, *, relay: bool = False) -> NetworkError:
    """The error of a connection to ``remote`` (``HOST:PORT``; ``relay``: a transit
    relay, not a certpair device) that could not be made."""
    hints = {**_REACH_HINTS, **_RELAY_HINTS} if relay else _REACH_HINTS
    hint = None if _name_error(error) else hints.get(error.errno or 0)
    return NetworkError(f"cannot reach {remote}: {hint or _cause(error)}")


def no_such_name(error: BaseException | None) -> bool:
    """Whether ``error`` says a host name does not resolve at all (not a DNS failure
    that may pass: that is a network error)."""
    return isinstance(error, OSError) and _name_error(error) and _no_such_name(error)
