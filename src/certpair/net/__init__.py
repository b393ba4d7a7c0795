"""asyncio drivers that move bytes between sockets, TLS and the protocol machines."""

from __future__ import annotations

from certpair.net.pairing import (
    DEFAULT_PORT,
    JoinerRefused,
    Listening,
    OfferEvent,
    PeerPaired,
    ProofRejected,
    run_join,
    run_offer,
)

__all__ = [
    "DEFAULT_PORT",
    "JoinerRefused",
    "Listening",
    "OfferEvent",
    "PeerPaired",
    "ProofRejected",
    "run_join",
    "run_offer",
]
