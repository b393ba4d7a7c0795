"""Where ``tunnel connect`` finds PEER: ``--to``, else the address book, else DNS-SD.

Without ``--to``, PEER's addresses come from the address book (where PEER's tunnel was
reached or announced, then the hosts it was seen on: pairing, incoming connections, its
``serve``), in the order :func:`certpair.reach.candidates` decides, and each connection
races them (``trusted/dial.py``), together with a DNS-SD lookup of PEER's ``tunnel
serve`` (:mod:`certpair.announce`) until one connection has succeeded. When the book
holds nothing, the lookup runs once at start. Whatever answers must still present
PEER's certificate.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from certpair.addresses import parse_address
from certpair.errors import BadInput
from certpair.ports import TUNNEL_PORT
from certpair.reach import TUNNEL, Candidate
from certpair.store import Peer, TrustStore
from certpair.trusted.dial import Discover, announced, route

__all__ = ["TO", "far_end_candidates", "resolve_far_end"]

TO = "--to"  # the source of an address the user gave


def far_end_candidates(
    store: TrustStore, peer: Peer, to: str | None, *, discovery_timeout: float = 0.0,
    interfaces: Sequence[str] = (),
) -> tuple[list[Candidate], Discover | None]:
    """Where to reach ``peer``'s ``tunnel serve``, in order, and the DNS-SD lookup to
    race with them.

    Args:
        store: the trust store.
        peer: the paired device.
        to: ``--to HOST[:PORT]``, or None.
        discovery_timeout: seconds to look for it with DNS-SD (0: do not).
        interfaces: IPv4 addresses of the interfaces to browse; empty means all.

    Returns:
        The candidates (only ``--to`` when given) and the lookup (None: none).

    Raises:
        BadInput: ``to`` is malformed, or there is no address to use.
    """
    if to is not None:
        host, port = parse_address(to, TUNNEL_PORT)
        return [Candidate(host=host, port=port, source=TO)], None
    candidates, discover = route(store, peer, TUNNEL, TUNNEL_PORT,
                                 discovery_timeout=discovery_timeout, interfaces=interfaces)
    if not candidates and discover is not None:
        # Nothing in the book: look now, so that the start already says where PEER is.
        found = announced(store, peer, TUNNEL, timeout=discovery_timeout,
                          interfaces=interfaces)
        candidates = found(threading.Event())
    if not candidates:
        raise BadInput(f"no address known for {peer.name} and no tunnel of it found on the "
                       f"local network: give --to HOST[:PORT]")
    return candidates, discover


def resolve_far_end(
    store: TrustStore, peer: Peer, to: str | None, *, discovery_timeout: float = 0.0,
    interfaces: Sequence[str] = (),
) -> tuple[str, int, str]:
    """The first place to try ``peer``'s ``tunnel serve`` (see
    :func:`far_end_candidates`): ``(host, port, source)``; source is ``--to``,
    ``pairing``, ``contact`` or ``dns-sd``.

    Raises:
        BadInput: ``to`` is malformed, or there is no address to use.
    """
    candidates, _ = far_end_candidates(store, peer, to, discovery_timeout=discovery_timeout,
                                       interfaces=interfaces)
    first = candidates[0]
    return first.host, first.port, first.source

