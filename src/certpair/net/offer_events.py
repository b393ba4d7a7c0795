"""What the offerer's driver reports while it runs: the events ``run_offer`` passes to
its ``on_event`` callback (the CLI renders them as text or JSON lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

from certpair.codes import Mode
from certpair.protocol.events import FailureReason
from certpair.store import Peer

__all__ = ["JoinerRefused", "Listening", "OfferEvent", "PeerPaired", "ProofRejected"]


@dataclass(frozen=True, kw_only=True)
class Listening:
    """The offerer listens with a (new) secret."""

    host: str
    port: int
    mode: Mode
    code: str = field(repr=False)
    expires_at: float  # wall-clock (time.time) seconds, for display


@dataclass(frozen=True, kw_only=True)
class ProofRejected:
    """A joiner's proof failed; ``burned`` says whether the secret is used up."""

    reason: FailureReason
    remote: str
    burned: bool
    attempts_left: int


@dataclass(frozen=True, kw_only=True)
class JoinerRefused:
    """A joiner's certificate was refused before any proof; the secret stays valid.

    ``reason`` names the rule (see :mod:`certpair.profile`).
    """

    remote: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class PeerPaired:
    """The offerer trusted a joiner."""

    peer: Peer


OfferEvent = Listening | ProofRejected | JoinerRefused | PeerPaired
