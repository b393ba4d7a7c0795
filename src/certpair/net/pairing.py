"""Pairing over the network: the offerer's server and the joiner's client.

The drivers live in ``certpair.net.offer`` and ``certpair.net.join``; this module keeps
the names they are known by.
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
    "run_join",
    "run_offer",
]

DEFAULT_PORT = PAIRING_PORT
