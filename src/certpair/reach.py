"""Where a paired device may be reached: the address book's entries, and the order to try them.

The store keeps, per peer, every address it was reached at or announced at
(:class:`PeerAddress`, ``store/address_book.py``). :func:`candidates` is the one place
that decides in which order a command tries them; ``trusted/dial.py`` races them
(RFC 8305 staggered starts) and reports which one won. An address is only ever a hint:
whoever answers there still has to pass the TLS check, pinned to the peer.

The entry has a ``kind`` (its transport): ``direct`` (TCP to ``host:port``); a
:class:`Candidate` of kind ``relay`` is a connection made through a transit relay (its
host and port are the relay's: never noted as the peer's address, docs/RELAY.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from certpair.addresses import format_address

__all__ = [
    "ANNOUNCED", "CONTACT", "DIRECT", "GIVEN", "HOST_ONLY", "MAX_CANDIDATES", "PAIRING",
    "RELAYED", "SERVE", "TUNNEL", "Candidate", "PeerAddress", "candidates", "relayed_via",
]

# What the address is for: the peer's `serve`, its `tunnel serve`, or its host only
# (an incoming connection's or a pairing's source port says nothing about its services).
SERVE = "serve"
TUNNEL = "tunnel"
HOST_ONLY = ""

# How it was learned.
CONTACT = "contact"      # a trusted connection (either direction) with the peer
ANNOUNCED = "dns-sd"  # a DNS-SD announcement carrying the peer's fingerprint
PAIRING = "pairing"      # the pairing connection
GIVEN = "given"          # the user gave it (HOST[:PORT], --to)

DIRECT = "direct"  # TCP to host:port
RELAYED = "relay"  # through a transit relay (host:port is the relay's)

MAX_CANDIDATES = 8  # tried at most per attempt: a race stays short whatever the book holds


@dataclass(frozen=True, kw_only=True)
class PeerAddress:
    """One address of a peer in the address book.

    ``port`` is None when only the host is known (``service`` is then empty);
    ``seen_at`` is the ISO time it was last reached or announced there.
    """

    host: str
    port: int | None
    service: str
    source: str
    seen_at: str
    kind: str = DIRECT


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """An address to try now, and where it came from (said in the output)."""

    host: str
    port: int
    source: str
    kind: str = DIRECT

    def __str__(self) -> str:
        return format_address(self.host, self.port)


def candidates(book: Iterable[PeerAddress], *, service: str, default_port: int,
               first: Iterable[Candidate] = ()) -> list[Candidate]:
    """The order to try a peer's ``service`` in.

    First ``first`` (what the user gave, or what won last time); then the addresses
    where that service answered or was announced, newest first (a device that moved is
    found at its new address before its old one); then the other hosts the peer was
    seen on (incoming connections, pairing, its other service), newest first, at the
    service's default port. Duplicates are dropped; at most :data:`MAX_CANDIDATES`.

    Args:
        book: the peer's address book entries.
        service: :data:`SERVE` or :data:`TUNNEL`.
        default_port: the service's port when only the host is known.
        first: candidates to put before the book's.

    Returns:
        The candidates, in the order to start them.
    """
    # "Via relay R" entries are not the peer's address: only a configured relay is used.
    entries = sorted((a for a in book if a.kind != RELAYED), key=lambda a: a.seen_at,
                     reverse=True)
    exact = [Candidate(host=a.host, port=a.port, source=a.source, kind=a.kind)
             for a in entries if a.service == service and a.port is not None]
    answered = {(c.kind, c.host) for c in exact}
    hosts = [Candidate(host=a.host, port=default_port, source=a.source, kind=a.kind)
             for a in entries if (a.kind, a.host) not in answered]
    ordered: list[Candidate] = []
    seen: set[tuple[str, str, int]] = set()
    for candidate in [*first, *exact, *hosts]:
        key = (candidate.kind, candidate.host, candidate.port)
        if key not in seen:
            seen.add(key)
            ordered.append(candidate)
    return ordered[:MAX_CANDIDATES]


def relayed_via(book: Iterable[PeerAddress], *, service: str) -> Candidate | None:
    """The relay the peer's ``service`` was last reached through (a "via relay R"
    entry: the relay's host and port), or None. Only ever named in a message: nothing
    contacts a relay the user has not configured."""
    relayed = [a for a in book if a.kind == RELAYED and a.service == service
               and a.port is not None]
    if not relayed:
        return None
    last = max(relayed, key=lambda a: a.seen_at)
    assert last.port is not None
    return Candidate(host=last.host, port=last.port, source=last.source, kind=RELAYED)
