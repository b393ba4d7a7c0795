"""asyncio drivers that move bytes between sockets, TLS and the protocol machines.

The offerer's server is ``certpair.net.offer`` (``run_offer``, and what it reports in
``offer_events``), the joiner's client ``certpair.net.join`` (``run_join``); both run
``conversation`` (TCP to TLS). Their public names
are gathered here.
"""

from __future__ import annotations

from certpair.net.join import run_join
from certpair.net.offer import (
    CONVERSATION_TIMEOUT,
    MAX_CODES,
    JoinerRefused,
    Listening,
    OfferEvent,
    PeerPaired,
    ProofRejected,
    RelayStatus,
    run_offer,
)
from certpair.ports import PAIRING_PORT

__all__ = [
    "CONVERSATION_TIMEOUT",
    "DEFAULT_PORT",
    "MAX_CODES",
    "JoinerRefused",
    "Listening",
    "OfferEvent",
    "PeerPaired",
    "ProofRejected",
    "RelayStatus",
    "run_join",
    "run_offer",
]

DEFAULT_PORT = PAIRING_PORT
