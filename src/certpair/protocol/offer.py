"""The offerer's secret and its budget: expiry, attempts, one conversation at a time.

One :class:`Offer` per secret shown to the user. Each pairing connection must
:meth:`Offer.claim` it when the joiner's proof arrives, and :meth:`Offer.release` it
when the proof has been judged. The clock is a parameter.
"""

from __future__ import annotations

import enum

from certpair.codes import Mode, Secret
from certpair.protocol.events import FailureReason

__all__ = ["DEFAULT_MAX_FAILURES", "Offer", "OfferState", "OfferUnavailable"]

# A cpace code gives the attacker one online guess per failure, so it allows exactly
# one; an hmac key is long enough that a few typos cost nothing.
DEFAULT_MAX_FAILURES = {Mode.CPACE: 1, Mode.HMAC: 3}


class OfferState(enum.Enum):
    """Where an offer stands."""

    OPEN = "open"
    CLAIMED = "claimed"
    PAIRED = "paired"
    BURNED = "burned"


class OfferUnavailable(Exception):
    """The offer cannot take a proof now; ``reason`` says why (sent to the peer)."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.text)
        self.reason = reason


class Offer:
    """A secret the offerer has shown, with its expiry and failure budget."""

    def __init__(self, *, secret: Secret, expires_at: float, max_failures: int | None = None):
        """Create an offer.

        Args:
            secret: the secret shown to the user.
            expires_at: time after which no proof is accepted.
            max_failures: failed proofs before the secret is burned; by mode if None.
        """
        self.secret = secret
        self.expires_at = expires_at
        self.max_failures = (
            DEFAULT_MAX_FAILURES[secret.mode] if max_failures is None else max_failures
        )
        self.failures = 0
        self.state = OfferState.OPEN

    @property
    def mode(self) -> Mode:
        """The pairing mode this offer runs."""
        return self.secret.mode

    def expired(self, now: float) -> bool:
        """Whether the secret's lifetime is over at ``now``."""
        return now >= self.expires_at

    def claim(self, now: float) -> None:
        """Reserve the offer for one proof.

        Raises:
            OfferUnavailable: another proof is being checked (BUSY), the secret has
                expired (EXPIRED), or it is used up or burned (PAIRING_FAILED, so a
                stale secret reads like a wrong one).
        """
        if self.state is OfferState.CLAIMED:
            raise OfferUnavailable(FailureReason.BUSY)
        if self.state is not OfferState.OPEN:
            raise OfferUnavailable(FailureReason.PAIRING_FAILED)
        if self.expired(now):
            raise OfferUnavailable(FailureReason.EXPIRED)
        self.state = OfferState.CLAIMED

    def release(self, *, paired: bool) -> None:
        """Judge the claimed proof: paired, or one more failure.

        Raises:
            RuntimeError: the offer was not claimed (a local error).
        """
        if self.state is not OfferState.CLAIMED:
            raise RuntimeError("release() without claim()")
        if paired:
            self.state = OfferState.PAIRED
            return
        self.failures += 1
        self.state = OfferState.BURNED if self.failures >= self.max_failures else OfferState.OPEN
