"""An active attacker at frame level: relay, replay, reflection, invalid points, tampering.

The attacker (mallory) is played directly against the sans-I/O state machines. She can
do anything with frames, but in a TLS handshake she can only present her own
certificate, and each TLS connection has its own exporter: so a relay is two sessions
whose channels differ, and a replay is a recorded frame fed to a session with a new
exporter. Where the test is stronger than any real capability (she knows a scalar),
the test name says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpair.codes import Mode
from certpair.protocol import cpace
from certpair.protocol.events import Confirmed, Failed, FailureReason, Paired
from certpair.protocol.frames import FrameType, encode_frame
from certpair.protocol.offer import Offer, OfferState
from certpair.protocol.session import (
    AD_JOINER_LABEL,
    AD_OFFERER_LABEL,
    Event,
    JoinerSession,
    OffererSession,
    cpace_ad,
    cpace_ci,
)
from tests.helpers import (
    BODY_BOUNDS,
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
    make_channel,
    make_code,
    make_joiner,
    make_link,
    make_offer,
    make_offerer,
    make_secret,
    split_frames,
)

_POINTS: Final = cast(
    dict[str, str],
    json.loads(
        (Path(__file__).parent.parent / "vectors" / "cpace" / "testvectors.json").read_text()
    )["X25519_points"],
)
# The draft's low-order points and non-canonical encodings of them: X25519 with any
# scalar gives the identity. Y6 and Y8..Y11 carry bit 255 and, once it is cleared as
# RFC 7748 requires, are ordinary points (see tests/test_cpace_vectors.py).
_IDENTITY_POINTS: Final = (
    "Invalid Y0",
    "Invalid Y1",
    "Invalid Y2",
    "Invalid Y3",
    "Invalid Y4",
    "Invalid Y5",
    "Invalid Y7",
)
_MALLORY: Final = b"mallory"
_MODES: Final = list(Mode)


def _nobody_paired(link: Link) -> bool:
    return not any(isinstance(event, Paired) for event in link.joiner_events + link.offerer_events)


def _frame_types(messages: list[bytes]) -> list[FrameType]:
    return [frame.type for data in messages for frame in split_frames(data)]


def _started_joiner(mode: Mode, *, exporter: bytes = EXPORTER_1) -> tuple[JoinerSession, bytes]:
    joiner = make_joiner(make_secret(mode), channel=make_channel(exporter=exporter))
    joiner.start()
    return joiner, joiner.data_to_send()


def _honest_link(mode: Mode, offer: Offer | None = None, exporter: bytes = EXPORTER_1) -> Link:
    return make_link(offer or make_offer(make_secret(mode)), exporter=exporter)


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
    assert _nobody_paired(link)
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
    link = _honest_link(Mode.CPACE)
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
    assert _nobody_paired(link)


# --- replay ---------------------------------------------------------------------------


def test_replayed_ya_and_ta_fail_in_a_new_tls_session() -> None:
    # Worst case for the offerer: same code, same certificates, even the same scalar;
    # only the exporter (the new TLS session) differs.
    recorded = _honest_link(Mode.CPACE).run()
    share_a, confirm_a, _ = recorded.sent(Direction.TO_OFFERER)
    offer = make_offer(make_secret(Mode.CPACE))
    victim = make_offerer(offer, channel=make_channel(exporter=EXPORTER_2))
    assert victim.receive_data(share_a, now=0) == []
    assert victim.receive_data(confirm_a, now=0) == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.state is OfferState.BURNED


def test_replayed_share_b_fails_in_a_new_tls_session() -> None:
    recorded = _honest_link(Mode.CPACE).run()
    share_b, _ = recorded.sent(Direction.TO_JOINER)
    joiner, _ = _started_joiner(Mode.CPACE, exporter=EXPORTER_2)
    assert joiner.receive_data(share_b) == failed_with(FailureReason.PAIRING_FAILED)
    assert _frame_types([joiner.data_to_send()]) == [FrameType.ERROR]


def test_replayed_m1_cannot_use_a_spent_offer() -> None:
    offer = make_offer(make_secret(Mode.HMAC))
    recorded = _honest_link(Mode.HMAC, offer).run()
    m1_frame, _ = recorded.sent(Direction.TO_OFFERER)
    victim = make_offerer(offer, channel=make_channel(exporter=EXPORTER_2))
    assert victim.receive_data(m1_frame, now=0) == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.state is OfferState.PAIRED


def test_replayed_m1_fails_from_attackers_own_certificate() -> None:
    recorded = _honest_link(Mode.HMAC).run()
    m1_frame, _ = recorded.sent(Direction.TO_OFFERER)
    offer = make_offer(make_secret(Mode.HMAC))  # even a fresh offer of the same key
    victim = make_offerer(
        offer, channel=make_channel(cert_joiner=MALLORY_CERT, exporter=EXPORTER_2)
    )
    assert victim.receive_data(m1_frame, now=0) == failed_with(FailureReason.PAIRING_FAILED)
    assert offer.failures == 1


def test_replayed_m2_fails_to_a_joiner_talking_to_the_attacker() -> None:
    recorded = _honest_link(Mode.HMAC).run()
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
    _, share_a = _started_joiner(Mode.CPACE)
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
    joiner, share_a = _started_joiner(Mode.CPACE)
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
    joiner, share_a = _started_joiner(Mode.CPACE)
    assert joiner.receive_data(share_a) == failed_with(FailureReason.PROTOCOL_ERROR)


def test_m1_played_as_m2_fails() -> None:
    joiner, request = _started_joiner(Mode.HMAC)
    m1 = split_frames(request)[0].body[:32]
    events = joiner.receive_data(encode_frame(FrameType.HMAC_RESPONSE, m1 + _MALLORY))
    assert events == failed_with(FailureReason.PAIRING_FAILED)


def test_m1_played_as_m2_over_the_link_pairs_nobody() -> None:
    link = _honest_link(Mode.HMAC)

    def reflect(way: Direction, data: bytes) -> bytes:
        if way is Direction.TO_JOINER:
            m1 = split_frames(link.sent(Direction.TO_OFFERER)[0])[0].body[:32]
            body = split_frames(data)[0].body
            return encode_frame(FrameType.HMAC_RESPONSE, m1 + body[32:])
        return data

    link.tamper = reflect
    link.run()
    assert link.joiner_events == failed_with(FailureReason.PAIRING_FAILED)


# --- invalid points -------------------------------------------------------------------


def test_identity_point_list_matches_the_vector_file() -> None:
    assert set(_IDENTITY_POINTS) < set(_POINTS)
    assert len(_POINTS) == 12


@pytest.mark.parametrize("name", _IDENTITY_POINTS)
def test_identity_point_as_ya_is_refused_before_any_tb_is_sent(name: str) -> None:
    # Were Tb sent for K = identity, mallory could test every code offline against it.
    offer = make_offer(make_secret(Mode.CPACE))
    offerer = make_offerer(offer)
    point = bytes.fromhex(_POINTS[name])
    events = offerer.receive_data(encode_frame(FrameType.CPACE_SHARE_A, point + _MALLORY), now=0)
    assert events == failed_with(FailureReason.PAIRING_FAILED)
    assert offerer.data_to_send() == error_frame(FailureReason.PAIRING_FAILED)
    assert offer.state is OfferState.BURNED


@pytest.mark.parametrize("name", _IDENTITY_POINTS)
def test_identity_point_as_yb_with_tag_for_identity_k_is_refused(name: str) -> None:
    # With K = identity mallory knows ISK and can make a Tb that verifies for any code:
    # only the identity check stops her from being trusted without the code.
    joiner, share_a = _started_joiner(Mode.CPACE)
    ya = split_frames(share_a)[0].body[:32]
    yb = bytes.fromhex(_POINTS[name])
    sid = joiner.channel.exporter
    ada = cpace_ad(AD_JOINER_LABEL, JOINER_NAME.encode())
    adb = cpace_ad(AD_OFFERER_LABEL, _MALLORY)
    k = bytes(32)
    mac_key = cpace.confirmation_key(sid, cpace.intermediate_session_key(sid, k, ya, ada, yb, adb))
    tb = cpace.confirmation_tag(mac_key, yb, adb)
    events = joiner.receive_data(encode_frame(FrameType.CPACE_SHARE_B, yb + tb + _MALLORY))
    assert events == failed_with(FailureReason.PAIRING_FAILED)
    assert joiner.data_to_send() == error_frame(FailureReason.PAIRING_FAILED)


@pytest.mark.parametrize("which", ["Ya", "Yb"])
@pytest.mark.parametrize("name", sorted(_POINTS))
def test_any_listed_x25519_point_substituted_for_a_share_pairs_nobody(
    name: str, which: str
) -> None:
    point = bytes.fromhex(_POINTS[name])
    offer = make_offer(make_secret(Mode.CPACE))
    link = _honest_link(Mode.CPACE, offer)
    target = {"Ya": FrameType.CPACE_SHARE_A, "Yb": FrameType.CPACE_SHARE_B}[which]

    def substitute(way: Direction, data: bytes) -> bytes:
        frame = split_frames(data)[0]
        if frame.type is not target:
            return data
        return encode_frame(frame.type, point + frame.body[32:])

    link.tamper = substitute
    link.run()
    assert _nobody_paired(link)
    assert any(
        isinstance(event, Failed) and event.reason is FailureReason.PAIRING_FAILED
        for event in link.joiner_events + link.offerer_events
    )
    assert offer.state is OfferState.BURNED


# --- tampering and noise (property-based) ---------------------------------------------


def _honest_transcript(mode: Mode) -> list[tuple[Direction, bytes]]:
    return _honest_link(mode).run().transcript


_HONEST: Final = {mode: _honest_transcript(mode) for mode in _MODES}


def _received(transcript: list[tuple[Direction, bytes]], direction: Direction) -> bytes:
    return b"".join(data for way, data in transcript if way is direction)


def _mutable_positions(mode: Mode, data: bytes) -> list[int]:
    if mode is Mode.CPACE:
        return list(range(len(data)))
    # hmac: version, type and the MAC. The seed's m1/m2 do not cover the names or the
    # frame length (which can trim a name); there TLS integrity is the only protection.
    return [0, 1, *range(4, min(len(data), 4 + 32))]


@settings(max_examples=150, deadline=None)
@given(mode=st.sampled_from(_MODES), data=st.data())
def test_mutated_honest_transcript_pairs_only_sides_that_saw_it_unmodified(
    mode: Mode, data: st.DataObject
) -> None:
    honest = _HONEST[mode]
    index = data.draw(st.integers(0, len(honest) - 1), label="message")
    position = data.draw(st.sampled_from(_mutable_positions(mode, honest[index][1])))
    mask = data.draw(st.integers(1, 255), label="xor")
    seen = 0

    def mutate(way: Direction, message: bytes) -> bytes:
        nonlocal seen
        seen += 1
        if seen - 1 != index:
            return message
        changed = bytearray(message)
        changed[position] ^= mask
        return bytes(changed)

    link = _honest_link(mode)
    link.tamper = mutate
    link.run()
    honest_to_joiner = _received(honest, Direction.TO_JOINER)
    honest_to_offerer = _received(honest, Direction.TO_OFFERER)
    # Each side's "both trust each other now": Paired for the joiner (it has the
    # offerer's word), Confirmed for the offerer (it has the joiner's).
    joiner_sure = any(isinstance(event, Paired) for event in link.joiner_events)
    offerer_sure = any(isinstance(event, Confirmed) for event in link.offerer_events)
    if joiner_sure:
        assert bytes(link.received_by_joiner) == honest_to_joiner
    if offerer_sure:
        assert bytes(link.received_by_offerer) == honest_to_offerer
    # The side the mutated message was meant for never gets there.
    to_offerer = honest[index][0] is Direction.TO_OFFERER
    assert not (offerer_sure if to_offerer else joiner_sure)
    # A proof the receiver saw mutated is never even tentatively stored.
    receiver_events = link.offerer_events if to_offerer else link.joiner_events
    if split_frames(honest[index][1])[0].type is not FrameType.COMMITTED:
        assert not any(isinstance(event, Paired) for event in receiver_events)


def test_unmodified_transcript_pairs_both_sides() -> None:
    # The control for the property above: with no mutation, both sides pair.
    for mode in _MODES:
        link = _honest_link(mode).run()
        assert link.transcript == _HONEST[mode]
        assert [type(event) for event in link.joiner_events + link.offerer_events] == [
            Paired, Paired, Confirmed]


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    frame_type = draw(st.sampled_from(list(BODY_BOUNDS)))
    low, high = BODY_BOUNDS[frame_type]
    return encode_frame(frame_type, draw(st.binary(min_size=low, max_size=high)))


@settings(max_examples=200, deadline=None)
@given(mode=st.sampled_from(_MODES), frames=st.lists(_frames(), min_size=1, max_size=5))
def test_random_frame_sequences_never_pair(mode: Mode, frames: list[bytes]) -> None:
    offer = make_offer(make_secret(mode))
    offerer = make_offerer(offer)
    joiner, _ = _started_joiner(mode)
    for frame in frames:
        for session_events in (
            [] if offerer.finished else offerer.receive_data(frame, now=0),
            [] if joiner.finished else joiner.receive_data(frame),
        ):
            assert all(isinstance(event, Failed) for event in session_events)
    assert offer.state is not OfferState.PAIRED


@settings(max_examples=200, deadline=None)
@given(mode=st.sampled_from(_MODES), chunks=st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_bytes_never_pair_or_raise(mode: Mode, chunks: list[bytes]) -> None:
    offer = make_offer(make_secret(mode))
    offerer = make_offerer(offer)
    joiner, _ = _started_joiner(mode)
    events: list[Event] = []
    for chunk in chunks:
        if not offerer.finished:
            events += offerer.receive_data(chunk, now=0)
        if not joiner.finished:
            events += joiner.receive_data(chunk)
    assert all(isinstance(event, Failed) for event in events)
    assert offer.state is not OfferState.PAIRED
