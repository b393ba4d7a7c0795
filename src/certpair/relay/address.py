"""Where a relay is, and what is said to it: the address, the meeting tokens, the sides.

A relay is a magic-wormhole transit relay (``twistd transitrelay``). Each connection
to it starts with one line, ``please relay TOKEN for side SIDE\\n`` (TOKEN: 64 hex
digits, SIDE: 16), and the relay answers ``ok\\n`` once a second connection with the
same TOKEN and another SIDE has arrived; from then on it copies bytes between the two.

Every TOKEN certpair uses is a hash of *public* values only, under a label that carries
the protocol version and the purpose (docs/SECURITY.md, "What a relay can do"):

* pairing: the nameplate, a random number drawn apart from the secret and shown in
  front of it (``57218+4711-0815-3``); a token made from the secret would hand the relay
  an offline test of every candidate code.
* trusted connections: the serving device's fingerprint, the service and a slot number.

The sides are fixed per role, so that two waiting ends (two offerers, two servers)
never meet each other, nor two connecting ends.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from certpair.errors import BadInput

__all__ = [
    "CONNECTING_SIDE",
    "RELAY_ENV",
    "WAITING_SIDE",
    "RelayAddress",
    "Route",
    "handshake_line",
    "pairing_token",
    "parse_relay",
    "relay_from_env",
    "service_token",
]

RELAY_ENV = "CERTPAIR_RELAY"
# The end that waits at the relay (the offerer, a server) and the one that comes to it.
WAITING_SIDE = "0000000000000001"
CONNECTING_SIDE = "0000000000000002"

_PAIRING_LABEL = b"certpair relay v1 pairing\x00"
_SERVICE_LABEL = b"certpair relay v1 service\x00"
_RELAY_RE = re.compile(
    r"tcp:(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})", re.ASCII)
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
_HEX_RE = re.compile(r"[0-9a-f]+", re.ASCII)


@dataclass(frozen=True, kw_only=True)
class RelayAddress:
    """A transit relay: ``host`` (IPv6 without brackets) and ``port``."""

    host: str
    port: int

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{shown}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class Route:
    """Which way a connection went: ``path`` is ``direct`` or ``relay``; ``remote`` is
    the address for people and the audit log (``HOST:PORT`` or ``relay tcp:R:P``)."""

    path: str
    remote: str


def parse_relay(text: str) -> RelayAddress:
    """Parse a relay address, ``tcp:HOST:PORT`` (``tcp:[IPV6]:PORT`` for IPv6).

    Args:
        text: the address as given (``--relay``, ``CERTPAIR_RELAY``, a URI).

    Returns:
        The relay's host and port.

    Raises:
        BadInput: not of that form, or a bad host or port.
    """
    match = _RELAY_RE.fullmatch(text.strip())
    if match is None:
        raise BadInput(f"a relay is given as tcp:HOST:PORT (e.g. tcp:relay.example:4001), "
                       f"not {text.strip()[:80]!r}")
    host, port = match["host"], int(match["port"])
    if not 1 <= port <= 65535:
        raise BadInput("the relay's port is outside 1..65535")
    if host.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise BadInput("the relay's host is not a valid IPv6 address") from None
    elif all(ch.isdigit() or ch == "." for ch in host):
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise BadInput("the relay's host is not a valid IPv4 address") from None
    elif len(host) > 253 or not all(_LABEL_RE.fullmatch(part) for part in host.split(".")):
        raise BadInput("the relay's host is not a valid host name")
    return RelayAddress(host=host, port=port)


def relay_from_env(environ: dict[str, str] | None = None) -> RelayAddress | None:
    """The relay configured in ``CERTPAIR_RELAY``, if any (an empty value is none).

    Raises:
        BadInput: the variable is set but malformed.
    """
    text = (os.environ if environ is None else environ).get(RELAY_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_relay(text)
    except BadInput as exc:
        raise BadInput(f"{RELAY_ENV}: {exc}") from None


def pairing_token(nameplate: str) -> str:
    """The meeting token of a pairing: a hash of the public nameplate, nothing secret.

    Args:
        nameplate: the nameplate's digits (check digit included).

    Returns:
        64 lowercase hex digits.
    """
    import hashlib  # noqa: PLC0415  # loads OpenSSL's libcrypto: not at every CLI start

    return hashlib.sha256(_PAIRING_LABEL + nameplate.encode("ascii")).hexdigest()


def service_token(fingerprint: str, service: str, slot: int) -> str:
    """The meeting token of one waiting connection of a trusted service.

    Args:
        fingerprint: the serving device's fingerprint (``sha256:`` + hex).
        service: which service (``serve``, ``tunnel``).
        slot: which of the server's waiting connections (0 .. slots-1).

    Returns:
        64 lowercase hex digits.
    """
    text = f"{fingerprint}\x00{service}\x00{slot}".encode("ascii")
    import hashlib  # noqa: PLC0415  # as above

    return hashlib.sha256(_SERVICE_LABEL + text).hexdigest()


def handshake_line(token: str, side: str) -> bytes:
    """The first line of a connection to the relay.

    Raises:
        ValueError: the token is not 64 hex digits or the side not 16.
    """
    if len(token) != 64 or len(side) != 16 or not _HEX_RE.fullmatch(token + side):
        raise ValueError("a relay token is 64 hex digits and a side 16")
    return f"please relay {token} for side {side}\n".encode("ascii")
