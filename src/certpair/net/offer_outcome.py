"""How a conversation whose proof checked ends the offer: confirmed, unconfirmed, or
undone because the joiner could not store (docs/PROTOCOL.md §6a)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from certpair.addresses import host_of
from certpair.errors import CertpairError, PairingFailed, PairingUnconfirmed
from certpair.net.join import unconfirmed_message
from certpair.net.offer_events import OfferEvent, PeerPaired
from certpair.protocol.events import Confirmed, Failed, Unconfirmed
from certpair.protocol.session import Event
from certpair.store import Peer, TrustStore

__all__ = ["Run", "conclude_stored"]


@dataclass(kw_only=True)
class Run:
    """What one conversation has stored, for its conclusion."""

    remote: str
    relay: str | None = None  # the relay it came through, if it did
    peer: Peer | None = None
    existed: bool = False
    error: CertpairError | None = None


def conclude_stored(event: Event, run: Run, *, store: TrustStore, result: asyncio.Future[Peer],
                    on_event: Callable[[OfferEvent], None]) -> None:
    """The proof checked: end the run with what became of the commit."""
    if result.done():
        return
    peer = run.peer
    if run.error is not None:
        # This side's store failed: end the offer with that error (exit 5) instead
        # of waiting on an offer that can no longer pair anyone.
        result.set_exception(run.error)
        return
    assert peer is not None
    try:
        if isinstance(event, Confirmed):
            store.confirm_peer(peer.fingerprint, remote=run.remote,
                               reason="the joiner stored it too", same_pairing=True)
            peer = dataclasses.replace(peer, confirmed=True)
            result.set_result(peer)
            on_event(PeerPaired(peer=peer, path="direct" if run.relay is None else "relay"))
        elif isinstance(event, Unconfirmed):
            host = host_of(run.remote)
            result.set_exception(PairingUnconfirmed(
                unconfirmed_message(peer.name, run.remote, host, relay=run.relay),
                peer=peer))
        else:
            assert isinstance(event, Failed)
            # Only the joiner's ERROR says it stored nothing: undo this side's commit
            # (a peer that was already trusted before this run stays, unconfirmed).
            if not run.existed:
                store.undo_pairing(peer.fingerprint, remote=run.remote,
                                   reason=f"the joiner: {event.reason.text}")
            result.set_exception(PairingFailed(
                f"pairing failed: {peer.name} could not store the pairing "
                f"({event.reason.text}); nothing is kept here: pair again"))
    except CertpairError as exc:
        result.set_exception(exc)
