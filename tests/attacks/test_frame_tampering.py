"""An active attacker at frame level: invalid points, tampering and noise.

Mallory is played directly against the sans-I/O state machines: she substitutes the
draft's invalid X25519 points for a share, flips bits anywhere in an honest transcript,
and sends random frames and random bytes (property-based). Relay, replay and
reflection are in ``test_frame_level.py``.
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
from certpair.protocol.offer import OfferState
from certpair.protocol.session import (
    AD_JOINER_LABEL,
    AD_OFFERER_LABEL,
    Event,
    cpace_ad,
)
from tests.helpers import (
    BODY_BOUNDS,
    JOINER_NAME,
    Direction,
    error_frame,
    failed_with,
    honest_link,
    make_offer,
    make_offerer,
    make_secret,
    nobody_paired,
    split_frames,
    started_joiner,
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
    # It cannot be a guess at the code, so it spends nothing (issue 10 §3).
    assert events == failed_with(FailureReason.PROTOCOL_ERROR)
    assert offerer.data_to_send() == error_frame(FailureReason.PROTOCOL_ERROR)
    assert offer.state is OfferState.OPEN


@pytest.mark.parametrize("name", _IDENTITY_POINTS)
def test_identity_point_as_yb_with_tag_for_identity_k_is_refused(name: str) -> None:
    # With K = identity mallory knows ISK and can make a Tb that verifies for any code:
    # only the identity check stops her from being trusted without the code.
    joiner, share_a = started_joiner(Mode.CPACE)
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
    link = honest_link(Mode.CPACE, offer)
    target = {"Ya": FrameType.CPACE_SHARE_A, "Yb": FrameType.CPACE_SHARE_B}[which]

    def substitute(way: Direction, data: bytes) -> bytes:
        frame = split_frames(data)[0]
        if frame.type is not target:
            return data
        return encode_frame(frame.type, point + frame.body[32:])

    link.tamper = substitute
    link.run()
    assert nobody_paired(link)
    if which == "Ya" and name in _IDENTITY_POINTS:
        # A low-order Ya cannot be a guess: refused before the claim, nothing spent
        # (tests/attacks/test_spend_only_real_guesses.py).
        assert link.offerer_events == [Failed(reason=FailureReason.PROTOCOL_ERROR)]
        assert offer.state is OfferState.OPEN
        return
    assert any(
        isinstance(event, Failed) and event.reason is FailureReason.PAIRING_FAILED
        for event in link.joiner_events + link.offerer_events
    )
    assert offer.state is OfferState.BURNED


# --- tampering and noise (property-based) ---------------------------------------------


def _honest_transcript(mode: Mode) -> list[tuple[Direction, bytes]]:
    return honest_link(mode).run().transcript


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

    link = honest_link(mode)
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
        link = honest_link(mode).run()
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
    joiner, _ = started_joiner(mode)
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
    joiner, _ = started_joiner(mode)
    events: list[Event] = []
    for chunk in chunks:
        if not offerer.finished:
            events += offerer.receive_data(chunk, now=0)
        if not joiner.finished:
            events += joiner.receive_data(chunk)
    assert all(isinstance(event, Failed) for event in events)
    assert offer.state is not OfferState.PAIRED
