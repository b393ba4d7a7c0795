"""Codes are spent only on real guesses (issue 10 §3).

A low-order (invalid) share cannot be a guess at the code: K = yb·Ya is all zero
whatever the code. Before the fix the offerer claimed the offer first and burned the
code on it; now the share is checked before the claim, refused as a protocol error,
and the code stays valid. The invalid points are the draft's, from
``tests/vectors/cpace/testvectors.json``. A joiner whose code was replaced is told
that the offerer may be showing a new one.
"""

from __future__ import annotations

import pytest

from certpair.codes import Mode, parse_secret
from certpair.errors import PairingFailed
from certpair.protocol.events import FailureReason
from certpair.protocol.frames import FrameType, encode_frame
from certpair.protocol.offer import OfferState
from tests.attacks.honest import MakeDevice, join, wrong_secret
from tests.helpers import failed_with, make_offer, make_offerer, make_secret
from tests.netutil import running_offer
from tests.test_cpace_vectors import _MUST_ABORT, _POINTS


@pytest.mark.parametrize("name", _MUST_ABORT)
def test_an_invalid_share_spends_nothing(name: str) -> None:
    offer = make_offer(make_secret(Mode.CPACE))
    offerer = make_offerer(offer)
    share = bytes.fromhex(_POINTS[name])
    events = offerer.receive_data(encode_frame(FrameType.CPACE_SHARE_A, share + b"mallory"),
                                  now=0.0)
    assert events == failed_with(FailureReason.PROTOCOL_ERROR)
    assert (offer.state, offer.failures, offerer.attempt_spent) == (OfferState.OPEN, 0, False)


async def test_a_joiner_with_a_replaced_code_is_told_the_offerer_may_show_a_new_one(
    make_device: MakeDevice,
) -> None:
    alpha, beta, mallory = make_device("alpha"), make_device("beta"), make_device("mallory")
    async with running_offer(*alpha, Mode.CPACE) as offer:
        old = parse_secret(offer.listening.code)
        with pytest.raises(PairingFailed):
            await join(mallory, offer.listening.port, wrong_secret(old))
        fresh = await offer.next_listening()
        assert fresh.code != offer.listening.code
        with pytest.raises(PairingFailed, match="the offerer may be showing a new code"):
            await join(beta, fresh.port, old)
