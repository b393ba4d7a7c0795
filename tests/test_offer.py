"""The offerer's budget: expiry, failure count, one claim at a time, single use."""

from __future__ import annotations

import pytest

from certpair.codes import Mode, Secret
from certpair.protocol.events import FailureReason
from certpair.protocol.offer import DEFAULT_MAX_FAILURES, Offer, OfferState, OfferUnavailable
from tests.helpers import make_code, make_hmac_key


def _secret(mode: Mode) -> Secret:
    return make_code("20262027") if mode is Mode.CPACE else make_hmac_key(1)


def _state(offer: Offer) -> OfferState:
    # A call, so that mypy does not keep offer.state narrowed across claim()/release().
    return offer.state


def _refusal(offer: Offer, now: float) -> FailureReason:
    with pytest.raises(OfferUnavailable) as excinfo:
        offer.claim(now)
    return excinfo.value.reason


def test_default_budget_is_one_failure_for_cpace_and_three_for_hmac() -> None:
    assert DEFAULT_MAX_FAILURES == {Mode.CPACE: 1, Mode.HMAC: 3}
    assert Offer(secret=_secret(Mode.CPACE), expires_at=1).max_failures == 1
    assert Offer(secret=_secret(Mode.HMAC), expires_at=1).max_failures == 3


@pytest.mark.parametrize("mode", list(Mode))
def test_new_offer_is_open_in_the_secrets_mode(mode: Mode) -> None:
    offer = Offer(secret=_secret(mode), expires_at=10)
    assert _state(offer) is OfferState.OPEN
    assert offer.mode is mode
    assert offer.failures == 0


@pytest.mark.parametrize("mode", list(Mode))
def test_successful_claim_pairs_once(mode: Mode) -> None:
    offer = Offer(secret=_secret(mode), expires_at=10)
    offer.claim(0)
    assert _state(offer) is OfferState.CLAIMED
    offer.release(paired=True)
    assert _state(offer) is OfferState.PAIRED
    assert _refusal(offer, 1) is FailureReason.PAIRING_FAILED


def test_second_claim_while_claimed_is_busy() -> None:
    offer = Offer(secret=_secret(Mode.CPACE), expires_at=10)
    offer.claim(0)
    assert _refusal(offer, 1) is FailureReason.BUSY
    assert _state(offer) is OfferState.CLAIMED
    assert offer.failures == 0


def test_cpace_offer_burns_on_first_failure() -> None:
    offer = Offer(secret=_secret(Mode.CPACE), expires_at=10)
    offer.claim(0)
    offer.release(paired=False)
    assert _state(offer) is OfferState.BURNED
    assert offer.failures == 1
    assert _refusal(offer, 1) is FailureReason.PAIRING_FAILED


def test_hmac_offer_burns_on_third_failure() -> None:
    offer = Offer(secret=_secret(Mode.HMAC), expires_at=10)
    for failures in (1, 2):
        offer.claim(0)
        offer.release(paired=False)
        assert _state(offer) is OfferState.OPEN
        assert offer.failures == failures
    offer.claim(0)
    offer.release(paired=False)
    assert _state(offer) is OfferState.BURNED
    assert _refusal(offer, 1) is FailureReason.PAIRING_FAILED


def test_explicit_max_failures_overrides_mode_default() -> None:
    offer = Offer(secret=_secret(Mode.CPACE), expires_at=10, max_failures=2)
    offer.claim(0)
    offer.release(paired=False)
    assert _state(offer) is OfferState.OPEN
    offer.claim(0)
    offer.release(paired=False)
    assert _state(offer) is OfferState.BURNED


@pytest.mark.parametrize(("now", "expired"), [(9.999, False), (10.0, True), (11.0, True)])
def test_offer_expires_at_its_deadline(now: float, expired: bool) -> None:
    offer = Offer(secret=_secret(Mode.CPACE), expires_at=10.0)
    assert offer.expired(now) is expired
    if expired:
        assert _refusal(offer, now) is FailureReason.EXPIRED
        assert _state(offer) is OfferState.OPEN
        assert offer.failures == 0
    else:
        offer.claim(now)
        assert _state(offer) is OfferState.CLAIMED


def test_release_without_claim_is_a_local_error() -> None:
    offer = Offer(secret=_secret(Mode.HMAC), expires_at=10)
    with pytest.raises(RuntimeError):
        offer.release(paired=True)
    with pytest.raises(RuntimeError):
        offer.release(paired=False)
    assert _state(offer) is OfferState.OPEN
    assert offer.failures == 0


def test_offer_unavailable_carries_reason_and_its_text() -> None:
    error = OfferUnavailable(FailureReason.BUSY)
    assert error.reason is FailureReason.BUSY
    assert str(error) == "busy"
