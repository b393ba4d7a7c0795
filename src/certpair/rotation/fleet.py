"""Sync as a client: one peer's ``serve``, or every peer whose address is known.

Each sync is its own trusted connection (``certpair serve`` answers the ``sync`` line);
``sync_all`` runs them on a few threads sharing one client context and one store.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from certpair.errors import CertpairError
from certpair.ports import ALPN_SERVE, alpn_offer
from certpair.rotation.exchange import SyncOutcome, run_sync
from certpair.store import TrustStore
from certpair.trusted import check_service, client_context, connect, connection_error
from certpair.trusted.failures import strict_eof

__all__ = ["SyncAttempt", "sync_all", "sync_with"]


@dataclass(frozen=True, kw_only=True)
class SyncAttempt:
    """One peer's sync: its address and either the outcome or the error."""

    address: str
    outcome: SyncOutcome | None = None
    error: CertpairError | None = None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _context(home: Path) -> ssl.SSLContext:
    context = client_context(home)
    context.set_alpn_protocols(alpn_offer(ALPN_SERVE))  # as ping: a wrong port says so
    return context


def sync_with(host: str, port: int, *, home: Path, store: TrustStore,
              context: ssl.SSLContext | None = None, timeout: float = 10.0) -> SyncOutcome:
    """Connect to a paired device's ``serve`` and run one sync.

    Raises:
        NotPaired, Expired, NetworkError: as for :func:`certpair.trusted.connect`.
        SyncNotSupported: that ``serve`` predates sync.
        LocalStateError: the store or the identity is unusable.
    """
    remote = _address(host, port)
    tls, peer = connect(host, port, home, context=context or _context(home), timeout=timeout)
    with strict_eof(tls):
        check_service(tls, ALPN_SERVE, remote)
        peer_cert = tls.getpeercert(binary_form=True)
        assert peer_cert is not None  # connect() checked it
        try:
            outcome = run_sync(tls.recv, tls.sendall, peer=peer, peer_cert=peer_cert,
                               home=home, store=store, remote=remote, initiator=True)
        except OSError as exc:
            raise connection_error(exc, remote) from exc
    store.remember_address(outcome.peer.fingerprint, remote)
    return outcome


def sync_all(home: Path, store: TrustStore, *, workers: int = 8,
             timeout: float = 10.0) -> Iterator[SyncAttempt]:
    """Sync with every peer whose ``serve`` address is known, ``workers`` at a time.

    Yields:
        One attempt per address, in completion order.

    Raises:
        LocalStateError: the store or the identity is unusable (before any attempt).
    """
    context = _context(home)
    targets = sorted(set(store.addresses().values()))

    def attempt(address: str) -> SyncAttempt:
        host, _, port = address.rpartition(":")
        try:
            outcome = sync_with(host.strip("[]"), int(port), home=home, store=store,
                                context=context, timeout=timeout)
        except CertpairError as exc:
            return SyncAttempt(address=address, error=exc)
        return SyncAttempt(address=address, outcome=outcome)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(attempt, targets)
