"""Sync as a client: one peer's ``serve``, or every peer's.

Each sync is its own trusted connection (``certpair serve`` answers the ``sync`` line).
A peer is reached at its addresses from the address book and its serve's DNS-SD
announcement, raced (``trusted/dial.py``); the connection must present that peer's
certificate, so ``sync PEER`` talks to that peer only, and another device answering at
one of its addresses only moves the race on to the next. With a relay configured, a
peer none of those addresses answers for is reached through it, at its ``serve
--relay`` (``trusted/relayed.py``, docs/RELAY.md). ``sync_all`` runs the peers on a few
threads sharing one client context, one store and one DNS-SD browse (a peer whose only
fresh address is its announcement is found there, each peer waiting at most
``discovery_timeout``), and reports every peer: synced, or not reached and why.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from certpair.errors import CertpairError
from certpair.ports import ALPN_SERVE, SERVE_PORT, alpn_offer
from certpair.reach import CONTACT, GIVEN, RELAYED, SERVE, Candidate, relayed_via
from certpair.relay import RelayAddress
from certpair.rotation.exchange import SyncOutcome, run_sync
from certpair.store import Peer, TrustStore
from certpair.trusted import check_service, client_context, connect, connection_error
from certpair.trusted.failures import strict_eof
from certpair.trusted.relayed import reach_peer
from certpair.trusted.routes import route

if TYPE_CHECKING:
    from certpair.browsing import Browser

__all__ = ["SyncAttempt", "sync_all", "sync_peer", "sync_with"]


@dataclass(frozen=True, kw_only=True)
class SyncAttempt:
    """One peer's sync: the address used (or tried), the peer, and the outcome or error."""

    address: str
    peer: Peer | None = None
    address_from: str | None = None
    outcome: SyncOutcome | None = None
    error: CertpairError | None = None
    passed: tuple[str, ...] = ()  # addresses passed over: another device answered there


def _context(home: Path, peer: Peer | None = None) -> ssl.SSLContext:
    context = client_context(home, peer=peer)
    context.set_alpn_protocols(alpn_offer(ALPN_SERVE))  # as ping: a wrong port says so
    return context


def _shown(used: Candidate) -> str:
    """The address for people and the log: the relay's, for a relayed connection."""
    return f"relay tcp:{used}" if used.kind == RELAYED else str(used)


def _run(tls: ssl.SSLSocket, peer: Peer, used: Candidate, *, home: Path,
         store: TrustStore) -> SyncOutcome:
    remote = _shown(used)
    with strict_eof(tls):
        check_service(tls, ALPN_SERVE, remote)
        peer_cert = tls.getpeercert(binary_form=True)
        assert peer_cert is not None  # the connection checked it
        try:
            outcome = run_sync(tls.recv, tls.sendall, peer=peer, peer_cert=peer_cert,
                               home=home, store=store, remote=remote, initiator=True)
        except OSError as exc:
            raise connection_error(exc, remote) from exc
    # Through a relay: a "via relay R" entry, never taken for the peer's address.
    store.note_address(outcome.peer, used.host, used.port, service=SERVE, source=CONTACT,
                       kind=used.kind)
    return outcome


def sync_with(host: str, port: int, *, home: Path, store: TrustStore,
              context: ssl.SSLContext | None = None, timeout: float = 10.0) -> SyncOutcome:
    """Connect to a paired device's ``serve`` at ``host:port`` and run one sync.

    Raises:
        NotPaired, Expired, NetworkError: as for :func:`certpair.trusted.connect`.
        SyncNotSupported: that ``serve`` predates sync.
        LocalStateError: the store or the identity is unusable.
    """
    tls, peer = connect(host, port, home, context=context or _context(home), timeout=timeout)
    return _run(tls, peer, Candidate(host=host, port=port, source=GIVEN), home=home,
                store=store)


def sync_peer(peer: Peer, *, home: Path, store: TrustStore,
              context: ssl.SSLContext | None = None, timeout: float = 10.0,
              discovery_timeout: float = 0.0, relay: RelayAddress | None = None,
              browser: Browser | None = None) -> SyncAttempt:
    """Reach ``peer``'s ``serve`` at its known (or announced) addresses and run one sync;
    only ``peer`` may answer (the context is pinned to it unless one is given, and the
    device that answers is checked either way). With ``relay``, a peer none of them
    answers for within :data:`~certpair.relay.race.RELAY_DELAY` is reached through it.

    Returns:
        The attempt: the address used and the outcome, or the address(es) tried and the
        error.

    Raises:
        LocalStateError: the store or the identity is unusable.
    """
    candidates, discover = route(store, peer, SERVE, SERVE_PORT,
                                 discovery_timeout=discovery_timeout, browser=browser)
    passed: list[str] = []
    tried = ", ".join([*(str(c) for c in candidates), *([f"relay {relay}"] if relay else [])]
                      ) or "no known address"
    try:
        via = None if relay else relayed_via(store.address_book(peer), service=SERVE)
        tls, found, used = reach_peer(peer, candidates, home,
                                      context=context or _context(home, peer),
                                      timeout=timeout, discover=discover, relay=relay,
                                      via=via, alpn=alpn_offer(ALPN_SERVE), passed=passed)
        outcome = _run(tls, found, used, home=home, store=store)
    except CertpairError as exc:
        return SyncAttempt(address=tried, peer=peer, error=exc, passed=tuple(passed))
    return SyncAttempt(address=_shown(used), peer=peer, address_from=used.source,
                       outcome=outcome, passed=tuple(passed))


def sync_all(home: Path, store: TrustStore, *, workers: int = 8, timeout: float = 10.0,
             discovery_timeout: float = 0.0,
             relay: RelayAddress | None = None) -> Iterator[SyncAttempt]:
    """Sync with every paired device, ``workers`` at a time (with ``relay``, those not
    reached directly through it, as :func:`sync_peer`).

    Args:
        home: certpair's home directory.
        store: its trust store.
        workers: peers synced at once.
        timeout: seconds to reach each peer, and for each answer.
        discovery_timeout: seconds each peer waits at most for its serve's announcement
            (one DNS-SD browse for all of them, raced with their known addresses; 0:
            none).
        relay: the configured relay, or None.

    Yields:
        One attempt per peer (in the store's order): synced, or why not.

    Raises:
        LocalStateError: the store or the identity is unusable (before any attempt).
    """
    context = _context(home)
    peers = store.peers()
    browser = None
    if discovery_timeout > 0 and peers:
        from certpair.announce import SERVE_SERVICE_TYPE  # noqa: PLC0415
        from certpair.browsing import Browser  # noqa: PLC0415  # zeroconf loads slowly

        browser = Browser(SERVE_SERVICE_TYPE)
        if browser.start() is not None:
            browser = None  # no multicast DNS here: the address book alone

    def attempt(peer: Peer) -> SyncAttempt:
        return sync_peer(peer, home=home, store=store, context=context, timeout=timeout,
                         discovery_timeout=discovery_timeout if browser else 0.0,
                         relay=relay, browser=browser)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield from pool.map(attempt, peers)
    finally:
        if browser is not None:
            browser.close()

