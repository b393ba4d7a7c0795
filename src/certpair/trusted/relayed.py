"""A paired device's service reached directly first, then through a transit relay.

``ping``, ``sync`` and ``tunnel connect`` with a relay configured (``--relay`` or
``CERTPAIR_RELAY``, docs/RELAY.md): the device's known and announced addresses are
raced as without a relay, for at most :data:`~certpair.relay.race.RELAY_DELAY`
seconds; then one of the connections its ``serve --relay`` keeps waiting at the relay
(``relay/serving.py``). TLS runs over the glued socket exactly as over a direct one,
pinned to the device: the relay carries bytes and decides nothing.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

from certpair.errors import CertpairError, Expired, NetworkError
from certpair.reach import RELAYED, Candidate
from certpair.relay import RELAY_ENV, RelayAddress
from certpair.relay.race import RELAY_DELAY
from certpair.relay.serving import SLOTS, dial_service
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted.client import connect
from certpair.trusted.dial import Discover
from certpair.trusted.failures import connection_error
from certpair.trusted.routes import connect_peer

__all__ = ["CUT_TRIES", "dial_relayed", "meeting_fingerprints", "reach_peer"]

# Handshakes through the relay that may be cut before one completes.
CUT_TRIES = SLOTS


def meeting_fingerprints(peer: Peer, store: TrustStore) -> list[str]:
    """The fingerprints ``peer`` waits under at a relay, to try in this order: its
    pending successor first (a device waits under its current and next key while its
    rotation is pending, under the new key alone once it ended), then its key."""
    known = store.acceptable_certificates(peer.fingerprint)
    return [fp for fp in known if fp != peer.fingerprint] + [peer.fingerprint]


def dial_relayed(peer: Peer, service: str, relay: RelayAddress, timeout: float, *,
                 fingerprints: Sequence[str] = ()) -> socket.socket:
    """A socket glued to one of ``peer``'s waiting connections of ``service``
    (``serve``, ``tunnel``) at ``relay``; TLS comes next. ``fingerprints``
    (:func:`meeting_fingerprints`) are tried in order, each but the last with its
    share of ``timeout``; without them, the peer's own.

    Raises:
        Expired: nothing answered in time.
        NetworkError: the relay failed, or closed every try (in words).
    """
    deadline = time.monotonic() + timeout
    order = list(fingerprints) or [peer.fingerprint]
    try:
        for left, fp in enumerate(order[:-1], start=0):
            share = (deadline - time.monotonic()) / (len(order) - left)
            with contextlib.suppress(TimeoutError):
                return dial_service(relay, fp, service, deadline=time.monotonic() + share)
        return dial_service(relay, order[-1], service, deadline=deadline)
    except TimeoutError:
        command = "serve" if service == "serve" else "tunnel serve"
        # A wait that timed out (exit 3); a relay that closed every try says so instead.
        raise Expired(f"{peer.name} did not answer at the relay {relay} within "
                      f"{timeout:.3g} s: is `certpair {command} --relay {relay}` running "
                      "there? (If it is, someone who knows its fingerprint may be "
                      "occupying its meeting points there: docs/SECURITY.md §9)") from None
    except OSError as exc:
        raise connection_error(exc, f"relay {relay}") from exc


def reach_peer(peer: Peer, candidates: Sequence[Candidate], home: Path, *,
               context: ssl.SSLContext, timeout: float, discover: Discover | None = None,
               relay: RelayAddress | None = None, service: str = "serve",
               via: Candidate | None = None, alpn: Sequence[str] = (),
               passed: list[str] | None = None) -> tuple[ssl.SSLSocket, Peer, Candidate]:
    """Reach ``peer``'s ``service`` at its addresses, then (with ``relay``) through it.

    Args:
        peer: the paired device.
        candidates: its addresses (:func:`certpair.trusted.routes.route`).
        home: certpair's home directory.
        context: a client context pinned to ``peer``.
        timeout: seconds for each attempt and every later read or write.
        discover: DNS-SD lookup raced with the addresses.
        relay: the configured relay, or None (addresses only).
        service: ``serve`` or ``tunnel`` (the waiting connections' tokens name it).
        via: without ``relay``, the relay the device was last reached through
            (:func:`certpair.reach.relayed_via`): a failure then names it.
        alpn, passed: as for :func:`connect_peer` (the addresses passed over: another
            device answered there).

    Returns:
        The TLS socket (``timeout`` set), the verified peer and the way it was
        reached: a :class:`Candidate` of kind :data:`~certpair.reach.RELAYED` (the
        relay's address) through the relay.

    Raises:
        NotPaired, Expired, NetworkError: as for :func:`connect_peer`; through the
            relay, the relay's failure (the direct one's is in ``__context__``).
    """
    if relay is None:
        try:
            return connect_peer(peer, candidates, home, context=context, timeout=timeout,
                                discover=discover, alpn=alpn, passed=passed)
        except (NetworkError, Expired) as exc:
            if via is None:
                raise
            shown = f"tcp:{via}"
            raise type(exc)(f"{exc}; {peer.name} was last reached through the relay "
                            f"{shown}: give --relay {shown} (or set {RELAY_ENV})") from exc
    if candidates or discover is not None:
        with contextlib.suppress(CertpairError):
            tls, found, used = connect_peer(peer, candidates, home, context=context,
                                            timeout=min(timeout, RELAY_DELAY),
                                            discover=discover, alpn=alpn, passed=passed)
            tls.settimeout(timeout)
            return tls, found, used
    tls, found = _through(peer, service, relay, home, context, timeout)
    return tls, found, Candidate(host=relay.host, port=relay.port, source="relay",
                                 kind=RELAYED)


def _through(peer: Peer, service: str, relay: RelayAddress, home: Path,
             context: ssl.SSLContext, timeout: float) -> tuple[ssl.SSLSocket, Peer]:
    """TLS with ``peer`` through the relay; a handshake cut short (a squatter glued to
    the waiting connection first, or the relay cut it) is tried again at another
    slot, at most :data:`CUT_TRIES` times in all, within ``timeout``."""
    deadline = time.monotonic() + timeout
    remote = f"relay {relay}"
    with open_store(home) as store:
        fingerprints = meeting_fingerprints(peer, store)
    for tries in range(1, CUT_TRIES + 1):
        sock = dial_relayed(peer, service, relay, max(0.1, deadline - time.monotonic()),
                            fingerprints=fingerprints)
        try:
            return connect(relay.host, relay.port, home, context=context, timeout=timeout,
                           peer=peer, sock=sock, remote=remote)
        except NetworkError as exc:  # cut: not a refusal (NotPaired), not a timeout
            if tries < CUT_TRIES and time.monotonic() < deadline:
                continue
            raise NetworkError(
                f"{exc}; {tries} handshake(s) through the relay were cut: the relay, or "
                f"someone occupying {peer.name}'s meeting points there (anyone who knows "
                "its fingerprint can: docs/SECURITY.md §9); a direct connection is not "
                "affected") from exc
    raise AssertionError("unreachable")  # the loop returns or raises

