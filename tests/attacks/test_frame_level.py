"""An active attacker at frame level: relay, replay, reflection.

The attacker (mallory) is played directly against the sans-I/O state machines. She can
do anything with frames, but in a TLS handshake she can only present her own
certificate, and each TLS connection has its own exporter: so a relay is two sessions
whose channels differ, and a replay is a recorded frame fed to a session with a new
exporter. Where the test is stronger than any real capability (she knows a scalar),
the test name says so. Invalid points, tampering and noise are in
``test_frame_tampering.py``.
"""

from __future__ import annotations

from typing import Final

import pytest

from certpair.codes import Mode
from certpair.protocol import cpace
from certpair.protocol.events import Failed, FailureReason
from certpair.protocol.frames import FrameType, encode_frame
from certpair.protocol.offer import Offer, OfferState
from certpair.protocol.session import (
    AD_JOINER_LABEL,
    AD_OFFERER_LABEL,
    OffererSession,
    cpace_ad,
    cpace_ci,
)
from tests.helpers import (
    EXPORTER_1,
    EXPORTER_2,
    JOINER_NAME,
    JOINER_SCALAR,
    MALLORY_CERT,
    OFFERER_SCALAR,
    Direction,
    Link,
    error_frame,
    failed_with,
    honest_link,
    make_channel,
    make_code,
    make_joiner,
    make_offer,
    make_offerer,
    make_secret,
    nobody_paired,
    split_frames,
    started_joiner,
)

_MALLORY: Final = b"mallory"
_MODES: Final = list(Mode)


def _frame_types(messages: list[bytes]) -> list[FrameType]:
    return [frame.type for data in messages for frame in split_frames(data)]


# --- man in the middle ----------------------------------------------------------------


@pytest.mark.parametrize(
    "exporters",
    [(EXPORTER_1, EXPORTER_2), (EXPORTER_1, EXPORTER_1)],
    ids=["two-tls-sessions", "same-exporter-only-certs-differ"],
)
@pytest.mark.parametrize("mode", _MODES)
def test_mitm_relaying_frames_between_two_tls_sessions_pairs_nobody(
    mode: Mode, exporters: tuple[bytes, bytes]
) -> None:
    offer = make_offer(make_secret(mode))
    # Mallory's certificate is what each victim observes of its peer.
    to_joiner = make_channel(cert_offerer=MALLORY_CERT, exporter=exporters[0])
    to_offerer = make_channel(cert_joiner=MALLORY_CERT, exporter=exporters[1])
    link = Link(
        joiner=make_joiner(offer.secret, channel=to_joiner),
        offerer=make_offerer(offer, channel=to_offerer),
    ).run()
    assert nobody_paired(link)
    reasons = {
        event.reason
        for event in link.joiner_events + link.offerer_events
        if isinstance(event, Failed)
    }
    assert reasons == {FailureReason.PAIRING_FAILED}
    assert offer.state is (OfferState.BURNED if mode is Mode.CPACE else OfferState.OPEN)
    assert offer.failures == 1


def test_cpace_joiner_gives_an_impostor_no_tag_to_guess_against() -> None:
    # Mallory poses as the offerer with a guessed code: she gets Ya, then only ERROR.
    mallory_offer = make_offer(make_code("27182818"))
    channel = make_channel(cert_offerer=MALLORY_CERT)
    link = Link(
        joiner=make_joiner(make_secret(Mode.CPACE), channel=channel),
        offerer=make_offerer(mallory_offer, channel=channel, name="mallory"),
    ).run()
    assert _frame_types(link.sent(Direction.TO_OFFERER)) == [
        FrameType.CPACE_SHARE_A,
        FrameType.ERROR,
    ]
    assert link.joiner_events == failed_with(FailureReason.PAIRING_FAILED)


@pytest.mark.parametrize("which", ["joiner-name", "offerer-name"])
def test_cpace_names_are_bound_into_the_proof(which: str) -> None:
    # Even inside one channel (which TLS would forbid), a rewritten name breaks the proof.
    link = honest_link(Mode.CPACE)
    target = Direction.TO_OFFERER if which == "joiner-name" else Direction.TO_JOINER

    def rename(way: Direction, data: bytes) -> bytes:
        frames = split_frames(data)
        if way is not target or frames[0].type not in (
            FrameType.CPACE_SHARE_A,
            FrameType.CPACE_SHARE_B,
        ):
            return data
        keep = 32 if way is Direction.TO_OFFERER else 96
        return encode_frame(frames[0].type, frames[0].body[:keep] + _MALLORY)

    link.tamper = rename
    link.run()
    assert nobody_paired(link)


# --- replay ---------------------------------------------------------------------------


def test_replayed_ya_and_ta_fail_in_a_new_tls_session() -> None:
    # Worst case for the offerer: same code, same certificates, even the same scalar;
    # only the exporter (the new TLS session) differs.
    recorded = honest_link(Mode.CPACE).run()
    share_a, confirm_a, _ = recorded.sent(Direction.TO_OFFERER)
    offer = make_offer(make_secret(Mode.CPACE))
    victim = make_offerer(offer, channel=make_channel(exporter=EXPORTER_2))
    assert victim.receive_data(share_a, now=0) == []
    assert victim.receive_data(confirm_a, now=0) == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.state is OfferState.BURNED


def test_replayed_share_b_fails_in_a_new_tls_session() -> None:
    recorded = honest_link(Mode.CPACE).run()
    share_b, _ = recorded.sent(Direction.TO_JOINER)
    joiner, _ = started_joiner(Mode.CPACE, exporter=EXPORTER_2)
    assert joiner.receive_data(share_b) == failed_with(FailureReason.PAIRING_FAILED)
    assert _frame_types([joiner.data_to_send()]) == [FrameType.ERROR]


def test_replayed_m1_cannot_use_a_spent_offer() -> None:
    offer = make_offer(make_secret(Mode.HMAC))
    recorded = honest_link(Mode.HMAC, offer).run()
    m1_frame, _ = recorded.sent(Direction.TO_OFFERER)
    victim = make_offerer(offer, channel=make_channel(exporter=EXPORTER_2))
    assert victim.receive_data(m1_frame, now=0) == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.state is OfferState.PAIRED


def test_replayed_m1_fails_from_attackers_own_certificate() -> None:
    recorded = honest_link(Mode.HMAC).run()
    m1_frame, _ = recorded.sent(Direction.TO_OFFERER)
    offer = make_offer(make_secret(Mode.HMAC))  # even a fresh offer of the same key
    victim = make_offerer(
        offer, channel=make_channel(cert_joiner=MALLORY_CERT, exporter=EXPORTER_2)
    )
    assert victim.receive_data(m1_frame, now=0) == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.failures == 1


def test_replayed_m2_fails_to_a_joiner_talking_to_the_attacker() -> None:
    recorded = honest_link(Mode.HMAC).run()
    (m2_frame,) = recorded.sent(Direction.TO_JOINER)
    joiner = make_joiner(
        make_secret(Mode.HMAC),
        channel=make_channel(cert_offerer=MALLORY_CERT, exporter=EXPORTER_2),
    )
    joiner.start()
    assert joiner.receive_data(m2_frame) == failed_with(FailureReason.PAIRING_FAILED)


# --- reflection -----------------------------------------------------------------------


def _offerer_after_share_a() -> tuple[OffererSession, Offer, bytes]:
    offer = make_offer(make_secret(Mode.CPACE))
    _, share_a = started_joiner(Mode.CPACE)
    offerer = make_offerer(offer)
    assert offerer.receive_data(share_a, now=0) == []
    return offerer, offer, offerer.data_to_send()


def test_offerers_share_b_reflected_to_offerer_fails() -> None:
    offerer, offer, share_b = _offerer_after_share_a()
    events = offerer.receive_data(share_b, now=0)
    assert events == failed_with(FailureReason.PROTOCOL_ERROR)
    assert offer.state is OfferState.BURNED


def test_offerers_tb_reflected_as_ta_fails() -> None:
    offerer, offer, share_b = _offerer_after_share_a()
    (frame,) = split_frames(share_b)
    tb = frame.body[32:96]
    events = offerer.receive_data(encode_frame(FrameType.CPACE_CONFIRM_A, tb), now=0)
    assert events == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.state is OfferState.BURNED


def test_offerer_refuses_ya_equal_to_its_own_yb() -> None:
    # Stronger than mallory: the test knows the offerer's scalar, so it can send Ya == Yb.
    offer = make_offer(make_secret(Mode.CPACE))
    channel = make_channel()
    g = cpace.calculate_generator(offer.secret.value, cpace_ci(channel), channel.exporter)
    yb = cpace.public_share(OFFERER_SCALAR, g)
    offerer = make_offerer(offer, channel=channel)
    events = offerer.receive_data(encode_frame(FrameType.CPACE_SHARE_A, yb + _MALLORY), now=0)
    assert events == failed_with(FailureReason.PAIRING_FAILED)
    assert offerer.data_to_send() == error_frame(FailureReason.PAIRING_FAILED)  # no Tb


def test_joiner_refuses_its_own_ya_echoed_as_yb_even_with_valid_tag() -> None:
    # Stronger than mallory: with the joiner's scalar the test can make Tb for Yb == Ya
    # verify, so only the explicit Ya == Yb check stands between this and Paired.
    joiner, share_a = started_joiner(Mode.CPACE)
    ya = split_frames(share_a)[0].body[:32]
    sid = joiner.channel.exporter
    ada = cpace_ad(AD_JOINER_LABEL, JOINER_NAME.encode())
    adb = cpace_ad(AD_OFFERER_LABEL, _MALLORY)
    k = cpace.shared_point(JOINER_SCALAR, ya)
    mac_key = cpace.confirmation_key(sid, cpace.intermediate_session_key(sid, k, ya, ada, ya, adb))
    tb = cpace.confirmation_tag(mac_key, ya, adb)
    events = joiner.receive_data(encode_frame(FrameType.CPACE_SHARE_B, ya + tb + _MALLORY))
    assert events == failed_with(FailureReason.PAIRING_FAILED)
    assert joiner.data_to_send() == error_frame(FailureReason.PAIRING_FAILED)  # no Ta


def test_joiners_share_a_reflected_to_joiner_fails() -> None:
    joiner, share_a = started_joiner(Mode.CPACE)
    assert joiner.receive_data(share_a) == failed_with(FailureReason.PROTOCOL_ERROR)


def test_m1_played_as_m2_fails() -> None:
    joiner, request = started_joiner(Mode.HMAC)
    m1 = split_frames(request)[0].body[:32]
    events = joiner.receive_data(encode_frame(FrameType.HMAC_RESPONSE, m1 + _MALLORY))
    assert events == failed_with(FailureReason.PAIRING_FAILED)


def test_m1_played_as_m2_over_the_link_pairs_nobody() -> None:
    link = honest_link(Mode.HMAC)

    def reflect(way: Direction, data: bytes) -> bytes:
        if way is Direction.TO_JOINER:
            m1 = split_frames(link.sent(Direction.TO_OFFERER)[0])[0].body[:32]
            body = split_frames(data)[0].body
            return encode_frame(FrameType.HMAC_RESPONSE, m1 + body[32:])
        return data

    link.tamper = reflect
    link.run()
    assert link.joiner_events == failed_with(FailureReason.PAIRING_FAILED)
