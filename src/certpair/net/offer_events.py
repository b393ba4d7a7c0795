"""What the offerer's driver reports while it runs: the events ``run_offer`` passes to
its ``on_event`` callback (the CLI renders them as text or JSON lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

from certpair.codes import Mode
from certpair.protocol.events import FailureReason
from certpair.store import Peer

__all__ = [
    "JoinerRefused", "Listening", "OfferEvent", "PeerPaired", "ProofRejected", "RelayStatus",
]


@dataclass(frozen=True, kw_only=True)
class Listening:
    """The offerer listens with a (new) secret."""

    host: str
    port: int
    mode: Mode
    code: str = field(repr=False)
    expires_at: float  # wall-clock (time.time) seconds, for display
    relay: str | None = None  # where the code is also met (``tcp:HOST:PORT``)
    nameplate: str | None = None  # the code's public meeting point there


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
    """The offerer trusted a joiner; ``path`` is ``direct`` or ``relay``."""

    peer: Peer
    path: str = "direct"


@dataclass(frozen=True, kw_only=True)
class RelayStatus:
    """The offerer's wait at the relay: taken (``waiting``), or failed and retried in
    ``retry_in`` seconds (``reason`` says why)."""

    relay: str
    waiting: bool
    reason: str
    retry_in: float


OfferEvent = Listening | ProofRejected | JoinerRefused | PeerPaired | RelayStatus
