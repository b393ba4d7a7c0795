"""The pairing state machines, driven over an in-memory link: no sockets, no clock, no TLS."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest

from certpair.codes import Mode, Secret
from certpair.protocol import cpace, hmac_proof
from certpair.protocol.events import Confirmed, Failed, FailureReason, Paired, Unconfirmed
from certpair.protocol.frames import FrameType, encode_frame
from certpair.protocol.offer import Offer, OfferState
from certpair.protocol.session import (
    AD_JOINER_LABEL,
    AD_OFFERER_LABEL,
    CI_LABEL,
    EXPORTER_LABEL,
    JoinerSession,
    OffererSession,
    SessionState,
)
from tests.helpers import (
    EXPORTER_2,
    JOINER_CERT,
    JOINER_NAME,
    JOINER_SCALAR,
    MALLORY_CERT,
    OFFERER_CERT,
    OFFERER_NAME,
    OFFERER_SCALAR,
    Direction,
    Link,
    error_frame,
    failed_with,
    make_channel,
    make_code,
    make_hmac_key,
    make_joiner,
    make_link,
    make_offer,
    make_offerer,
    make_secret,
    split_frames,
)

_HMAC_VECTOR: Final = Path(__file__).parent / "vectors" / "hmac_vector.json"
_MODES: Final = list(Mode)


def _wrong_secret(mode: Mode) -> Secret:
    # A different secret of the same mode with a valid check character: not a typo.
    return make_code("27182818") if mode is Mode.CPACE else make_hmac_key(2)


def _other(mode: Mode) -> Mode:
    return Mode.HMAC if mode is Mode.CPACE else Mode.CPACE


def _state(session: JoinerSession | OffererSession) -> SessionState:
    # A call, so that mypy does not keep the attribute narrowed across receive_data().
    return session.state


def _offer_state(offer: Offer) -> OfferState:
    return offer.state


def _started_joiner(mode: Mode) -> JoinerSession:
    joiner = make_joiner(make_secret(mode))
    joiner.start()
    joiner.data_to_send()
    return joiner


def _offerer_awaiting_confirm() -> tuple[OffererSession, Offer]:
    offer = make_offer(make_secret(Mode.CPACE))
    joiner = make_joiner(offer.secret)
    offerer = make_offerer(offer)
    joiner.start()
    assert offerer.receive_data(joiner.data_to_send(), now=0) == []
    offerer.data_to_send()
    assert offerer.state is SessionState.AWAIT_CONFIRM
    return offerer, offer


# --- honest runs ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", _MODES)
def test_honest_run_pairs_both_sides_with_each_others_cert_and_name(mode: Mode) -> None:
    offer = make_offer(make_secret(mode))
    link = make_link(offer).run()
    assert link.joiner_events == [
        Paired(peer_name=OFFERER_NAME, peer_cert_der=OFFERER_CERT, mode=mode)
    ]
    assert link.offerer_events == [
        Paired(peer_name=JOINER_NAME, peer_cert_der=JOINER_CERT, mode=mode),
        Confirmed(peer_name=JOINER_NAME, peer_cert_der=JOINER_CERT, mode=mode),
    ]
    assert link.joiner.state is SessionState.DONE
    assert link.offerer.state is SessionState.DONE
    assert offer.state is OfferState.PAIRED
    assert offer.failures == 0


@pytest.mark.parametrize(
    ("mode", "flow"),
    [
        (Mode.HMAC, [FrameType.HMAC_REQUEST, FrameType.HMAC_RESPONSE, FrameType.COMMITTED]),
        (
            Mode.CPACE,
            [FrameType.CPACE_SHARE_A, FrameType.CPACE_SHARE_B, FrameType.CPACE_CONFIRM_A,
             FrameType.COMMITTED, FrameType.COMMITTED],
        ),
    ],
)
def test_honest_run_sends_exactly_the_protocols_messages(
    mode: Mode, flow: list[FrameType]
) -> None:
    link = make_link(make_offer(make_secret(mode))).run()
    types = [frame.type for _, data in link.transcript for frame in split_frames(data)]
    assert types == flow
    directions = [way for way, _ in link.transcript]
    expected = [Direction.TO_OFFERER, Direction.TO_JOINER] * 3
    assert directions == expected[: len(flow)]


@pytest.mark.parametrize("mode", _MODES)
def test_byte_at_a_time_delivery_gives_same_transcript_and_events(mode: Mode) -> None:
    whole = make_link(make_offer(make_secret(mode))).run()
    drip = make_link(make_offer(make_secret(mode)))
    drip.chunk_size = 1
    drip.run()
    assert drip.transcript == whole.transcript
    assert drip.joiner_events == whole.joiner_events
    assert drip.offerer_events == whole.offerer_events
    assert [type(e) for e in drip.joiner_events + drip.offerer_events] == [
        Paired, Paired, Confirmed]


def test_hmac_offerer_commits_on_m1_before_m2_and_joiner_on_m2() -> None:
    link = make_link(make_offer(make_secret(Mode.HMAC)))
    link.joiner.start()
    link.offerer.receive_data(link.joiner.data_to_send(), now=0.0)
    # m2 is the offerer's word that it committed: nothing goes out before the commit.
    assert link.offerer.state is SessionState.COMMITTING
    assert link.offerer.data_to_send() == b""
    link.offerer.committed()
    m2 = link.offerer.data_to_send()
    assert [f.type for f in split_frames(m2)] == [FrameType.HMAC_RESPONSE]
    assert [type(e) for e in link.joiner.receive_data(m2)] == [Paired]
    assert link.joiner.data_to_send() == b""
    link.joiner.committed()
    assert [f.type for f in split_frames(link.joiner.data_to_send())] == [FrameType.COMMITTED]
    assert link.joiner.state is SessionState.DONE


def test_cpace_offerer_commits_on_ta_and_joiner_on_the_offerers_committed() -> None:
    link = make_link(make_offer(make_secret(Mode.CPACE)))
    link.joiner.start()
    link.to_offerer()
    assert link.offerer_events == []
    link.to_joiner()
    # Tb checked, Ta sent, but the joiner stores nothing until the offerer has.
    assert link.joiner_events == []
    assert link.joiner.state is SessionState.AWAIT_COMMITTED
    link.to_offerer()
    assert [type(event) for event in link.offerer_events] == [Paired]
    assert link.joiner_events == []
    link.to_joiner()
    assert [type(event) for event in link.joiner_events] == [Paired]
    link.to_offerer()
    assert [type(event) for event in link.offerer_events] == [Paired, Confirmed]


@pytest.mark.parametrize("mode", _MODES)
@pytest.mark.parametrize("failing", ["joiner", "offerer"])
def test_store_failure_is_told_to_the_peer_which_then_stores_nothing(
    mode: Mode, failing: str
) -> None:
    link = make_link(make_offer(make_secret(mode)))
    link.store_fails = frozenset({failing})
    link.run()
    store_failed = Failed(reason=FailureReason.STORE_FAILED)
    told = Failed(reason=FailureReason.STORE_FAILED, remote=True)
    if failing == "offerer":
        # The offerer committed first and failed: the joiner never sees Paired.
        assert [type(e) for e in link.offerer_events] == [Paired, Failed]
        assert link.offerer_events[-1] == store_failed
        assert link.joiner_events == [told]
    else:
        # The offerer committed; the joiner's failure tells it to undo that.
        assert [type(e) for e in link.joiner_events] == [Paired, Failed]
        assert link.joiner_events[-1] == store_failed
        assert [type(e) for e in link.offerer_events] == [Paired, Failed]
        assert link.offerer_events[-1] == told


@pytest.mark.parametrize("mode", _MODES)
def test_losing_the_last_message_leaves_an_unconfirmed_pairing_never_a_silent_one(
    mode: Mode,
) -> None:
    # Drop every message from the k-th on; whoever has proven but not heard the peer's
    # commitment ends Unconfirmed, and no side ends Paired-and-done unless the other
    # side stored it too (Confirmed, or Paired after the offerer's word).
    flow_length = 3 if mode is Mode.HMAC else 5
    for cut in range(flow_length + 1):
        link = make_link(make_offer(make_secret(mode)))
        sent = 0

        def drop_from_cut(direction: Direction, data: bytes, cut: int = cut) -> bytes:
            nonlocal sent
            del direction
            sent += 1
            return data if sent <= cut else b""

        link.tamper = drop_from_cut
        link.run()
        joiner_kinds = [type(e) for e in link.joiner_events]
        offerer_kinds = [type(e) for e in link.offerer_events]
        joiner_stored = Paired in joiner_kinds or Unconfirmed in joiner_kinds
        offerer_stored = Paired in offerer_kinds
        offerer_sure = Confirmed in offerer_kinds
        if joiner_stored and Unconfirmed not in joiner_kinds:
            assert offerer_stored, f"cut {cut}: joiner trusts alone"
        if offerer_stored and not offerer_sure:
            assert offerer_kinds[-1] is Unconfirmed, f"cut {cut}: offerer not told"
        if offerer_sure:
            assert Paired in joiner_kinds, f"cut {cut}"


def test_nothing_is_sent_before_start_or_before_the_proof_arrives() -> None:
    offer = make_offer(make_secret(Mode.CPACE))
    joiner = make_joiner(offer.secret)
    offerer = make_offerer(offer)
    assert joiner.data_to_send() == b""
    assert offerer.data_to_send() == b""
    joiner.start()
    assert joiner.data_to_send() != b""
    assert joiner.data_to_send() == b""  # drained


@pytest.mark.parametrize("mode", _MODES)
@pytest.mark.parametrize(
    ("joiner_name", "offerer_name"),
    [("x" * 64, "é" * 32), ("Zo\u00eb\u2019s laptop \U0001f4bb", "\u00a0nbsp"), ("a", "b")],
)
def test_names_of_1_to_64_utf8_bytes_reach_the_peer(
    mode: Mode, joiner_name: str, offerer_name: str
) -> None:
    offer = make_offer(make_secret(mode))
    link = Link(
        joiner=make_joiner(offer.secret, name=joiner_name),
        offerer=make_offerer(offer, name=offerer_name),
    ).run()
    assert link.joiner_events == [
        Paired(peer_name=offerer_name, peer_cert_der=OFFERER_CERT, mode=mode)
    ]
    assert link.offerer_events[0] == Paired(
        peer_name=joiner_name, peer_cert_der=JOINER_CERT, mode=mode)


@pytest.mark.parametrize("name", ["", "x" * 65, "é" * 33])
def test_own_name_outside_1_to_64_bytes_is_a_local_error(name: str) -> None:
    secret = make_secret(Mode.CPACE)
    with pytest.raises(ValueError, match="name"):
        make_joiner(secret, name=name)
    with pytest.raises(ValueError, match="name"):
        make_offerer(make_offer(secret), name=name)


# --- what goes on the wire ------------------------------------------------------------


def test_hmac_request_and_response_carry_the_seeds_m1_and_m2() -> None:
    secret = make_secret(Mode.HMAC)
    link = make_link(make_offer(secret)).run()
    (request,) = split_frames(link.sent(Direction.TO_OFFERER)[0])
    (response,) = split_frames(link.sent(Direction.TO_JOINER)[0])
    certs = JOINER_CERT + OFFERER_CERT
    m1 = std_hmac.new(secret.value, b"request" + certs, hashlib.sha256).digest()
    m2 = std_hmac.new(secret.value, b"response" + certs, hashlib.sha256).digest()
    assert request.body == m1 + JOINER_NAME.encode()
    assert response.body == m2 + OFFERER_NAME.encode()


def test_cpace_share_a_is_ya_on_generator_from_code_ci_and_exporter() -> None:
    secret = make_secret(Mode.CPACE)
    link = make_link(make_offer(secret)).run()
    (share_a,) = split_frames(link.sent(Direction.TO_OFFERER)[0])
    ci = cpace.lv_cat(b"certpair/1 cpace ci", JOINER_CERT, OFFERER_CERT)
    g = cpace.calculate_generator(secret.value, ci, make_channel().exporter)
    assert secret.value == b"31415926"
    assert share_a.body == cpace.public_share(JOINER_SCALAR, g) + JOINER_NAME.encode()


def test_cpace_tags_follow_the_draft_over_role_labelled_ad() -> None:
    secret = make_secret(Mode.CPACE)
    link = make_link(make_offer(secret)).run()
    (share_a,) = split_frames(link.sent(Direction.TO_OFFERER)[0])
    (share_b,) = split_frames(link.sent(Direction.TO_JOINER)[0])
    (confirm_a,) = split_frames(link.sent(Direction.TO_OFFERER)[1])
    sid = make_channel().exporter
    ya, yb, tb = share_a.body[:32], share_b.body[:32], share_b.body[32:96]
    ada = cpace.lv_cat(b"certpair/1 cpace joiner", JOINER_NAME.encode())
    adb = cpace.lv_cat(b"certpair/1 cpace offerer", OFFERER_NAME.encode())
    k = cpace.shared_point(OFFERER_SCALAR, ya)
    mac_key = cpace.confirmation_key(sid, cpace.intermediate_session_key(sid, k, ya, ada, yb, adb))
    assert tb == cpace.confirmation_tag(mac_key, yb, adb)
    assert confirm_a.body == cpace.confirmation_tag(mac_key, ya, ada)
    assert share_b.body[96:] == OFFERER_NAME.encode()


def test_labels_carry_protocol_version_and_role() -> None:
    # docs/PROTOCOL.md sections 2 and 5; house rule 2.
    assert EXPORTER_LABEL == b"EXPORTER-certpair/1 pairing"
    assert CI_LABEL == b"certpair/1 cpace ci"
    assert AD_JOINER_LABEL == b"certpair/1 cpace joiner"
    assert AD_OFFERER_LABEL == b"certpair/1 cpace offerer"
    assert hmac_proof.REQUEST_LABEL == b"request"
    assert hmac_proof.RESPONSE_LABEL == b"response"


@pytest.mark.parametrize(
    "change",
    ["code", "cert_joiner", "cert_offerer", "exporter", "certs_swapped"],
)
def test_cpace_share_a_depends_on_code_certificates_and_exporter(change: str) -> None:
    def share_a(secret: Secret, **channel: bytes) -> bytes:
        joiner = make_joiner(secret, channel=make_channel(**channel))
        joiner.start()
        return joiner.data_to_send()

    base = share_a(make_secret(Mode.CPACE))
    changed = {
        "code": lambda: share_a(_wrong_secret(Mode.CPACE)),
        "cert_joiner": lambda: share_a(make_secret(Mode.CPACE), cert_joiner=MALLORY_CERT),
        "cert_offerer": lambda: share_a(make_secret(Mode.CPACE), cert_offerer=MALLORY_CERT),
        "exporter": lambda: share_a(make_secret(Mode.CPACE), exporter=EXPORTER_2),
        "certs_swapped": lambda: share_a(
            make_secret(Mode.CPACE), cert_joiner=OFFERER_CERT, cert_offerer=JOINER_CERT
        ),
    }[change]()
    assert changed != base


def test_hmac_messages_match_protocol_vector() -> None:
    if not _HMAC_VECTOR.exists():
        pytest.skip(f"{_HMAC_VECTOR} not written yet (owned by the vectors author)")
    vector = {
        key: bytes.fromhex(value)
        for key, value in json.loads(_HMAC_VECTOR.read_text()).items()
        if key in {"cert_joiner_der_hex", "cert_offerer_der_hex", "key_hex", "m1_hex", "m2_hex"}
    }
    key = vector["key_hex"]
    cert_j, cert_o = vector["cert_joiner_der_hex"], vector["cert_offerer_der_hex"]
    m1 = hmac_proof.compute(key, hmac_proof.REQUEST_LABEL, cert_j, cert_o)
    m2 = hmac_proof.compute(key, hmac_proof.RESPONSE_LABEL, cert_j, cert_o)
    assert m1 == vector["m1_hex"]
    assert m2 == vector["m2_hex"]
    hmac_proof.verify(key, hmac_proof.REQUEST_LABEL, cert_j, cert_o, vector["m1_hex"])
    hmac_proof.verify(key, hmac_proof.RESPONSE_LABEL, cert_j, cert_o, vector["m2_hex"])
    # The session machines put exactly these tags on the wire.
    secret = Secret(mode=Mode.HMAC, value=key, display="", bits=len(key) * 8.0)
    channel = make_channel(cert_joiner=cert_j, cert_offerer=cert_o)
    link = Link(
        joiner=make_joiner(secret, channel=channel),
        offerer=make_offerer(make_offer(secret), channel=channel),
    ).run()
    assert split_frames(link.sent(Direction.TO_OFFERER)[0])[0].body[:32] == m1
    assert split_frames(link.sent(Direction.TO_JOINER)[0])[0].body[:32] == m2
    assert isinstance(link.joiner_events[0], Paired)


# --- the offer's budget through the sessions ------------------------------------------


def test_wrong_code_burns_cpace_offer() -> None:
    offer = make_offer(make_secret(Mode.CPACE))
    link = make_link(offer, _wrong_secret(Mode.CPACE)).run()
    assert link.joiner_events == failed_with(FailureReason.PAIRING_FAILED)
    assert link.offerer_events == failed_with(FailureReason.PAIRING_FAILED, remote=True)
    assert offer.state is OfferState.BURNED
    assert offer.failures == 1
    # The right code cannot be used any more either.
    retry = make_link(offer, exporter=EXPORTER_2).run()
    assert retry.offerer_events == failed_with(FailureReason.PAIRING_FAILED)
    assert retry.joiner_events == failed_with(FailureReason.PAIRING_FAILED, remote=True)


def test_wrong_hmac_key_fails_and_burns_key_on_third_failure() -> None:
    offer = make_offer(make_secret(Mode.HMAC))
    for failures in (1, 2, 3):
        link = make_link(offer, _wrong_secret(Mode.HMAC)).run()
        assert link.offerer_events == failed_with(FailureReason.PAIRING_FAILED)
        assert link.joiner_events == failed_with(FailureReason.PAIRING_FAILED, remote=True)
        assert offer.failures == failures
        assert _offer_state(offer) is (OfferState.BURNED if failures == 3 else OfferState.OPEN)
    retry = make_link(offer).run()
    assert retry.offerer_events == failed_with(FailureReason.PAIRING_FAILED)


def test_hmac_key_still_pairs_after_two_wrong_attempts() -> None:
    offer = make_offer(make_secret(Mode.HMAC))
    for _ in range(2):
        make_link(offer, _wrong_secret(Mode.HMAC)).run()
    link = make_link(offer).run()
    assert [type(event) for event in link.offerer_events + link.joiner_events] == [
        Paired, Confirmed, Paired]
    assert offer.state is OfferState.PAIRED


@pytest.mark.parametrize("offer_mode", _MODES)
def test_mode_mismatch_fails_without_spending_offer(offer_mode: Mode) -> None:
    offer = make_offer(make_secret(offer_mode))
    link = make_link(offer, make_secret(_other(offer_mode))).run()
    assert link.offerer_events == failed_with(FailureReason.MODE_MISMATCH)
    assert link.joiner_events == failed_with(FailureReason.MODE_MISMATCH, remote=True)
    assert offer.state is OfferState.OPEN
    assert offer.failures == 0
    assert isinstance(make_link(offer).run().offerer_events[0], Paired)


@pytest.mark.parametrize("mode", _MODES)
@pytest.mark.parametrize(("now", "pairs"), [(299.0, True), (300.0, False), (1e9, False)])
def test_offer_refuses_proof_from_its_expiry_on(mode: Mode, now: float, pairs: bool) -> None:
    offer = make_offer(make_secret(mode), expires_at=300.0)
    link = make_link(offer, now=now).run()
    if pairs:
        assert isinstance(link.offerer_events[0], Paired)
    else:
        assert link.offerer_events == failed_with(FailureReason.EXPIRED)
        assert link.joiner_events == failed_with(FailureReason.EXPIRED, remote=True)
        assert offer.failures == 0


def test_second_session_is_busy_while_first_holds_cpace_claim() -> None:
    offer = make_offer(make_secret(Mode.CPACE))
    first = make_link(offer)
    first.joiner.start()
    first.to_offerer()
    assert offer.state is OfferState.CLAIMED
    second = make_link(offer, exporter=EXPORTER_2).run()
    assert second.offerer_events == failed_with(FailureReason.BUSY)
    assert second.joiner_events == failed_with(FailureReason.BUSY, remote=True)
    assert _offer_state(offer) is OfferState.CLAIMED
    assert offer.failures == 0
    # The busy refusal did not disturb the first conversation.
    first.pump()
    assert [type(event) for event in first.joiner_events + first.offerer_events] == [
        Paired, Paired, Confirmed]
    assert _offer_state(offer) is OfferState.PAIRED


def test_connection_without_proof_claims_nothing() -> None:
    offer = make_offer(make_secret(Mode.CPACE))
    idle = make_offerer(offer)
    other = make_link(offer, exporter=EXPORTER_2)
    other.joiner.start()
    other.to_offerer()  # the idle connection does not make this one busy
    assert offer.state is OfferState.CLAIMED
    assert idle.connection_lost() == Failed(reason=FailureReason.CONNECTION_LOST)
    other.pump()
    assert _offer_state(offer) is OfferState.PAIRED


def test_joiner_vanishing_after_tb_burns_cpace_code() -> None:
    offer = make_offer(make_secret(Mode.CPACE))
    link = make_link(offer)

    def drop_ta(way: Direction, data: bytes) -> bytes:
        awaiting = link.joiner.state is SessionState.AWAIT_COMMITTED
        return b"" if way is Direction.TO_OFFERER and awaiting else data

    link.tamper = drop_ta
    link.run()
    # The joiner checked Tb; its Ta never arrived, so it cannot know whether the
    # offerer stored it: Unconfirmed, never Paired.
    assert [type(event) for event in link.joiner_events] == [Unconfirmed]
    assert link.offerer_events == failed_with(FailureReason.CONNECTION_LOST)
    assert offer.state is OfferState.BURNED
    assert link.offerer.data_to_send() == b""  # nobody to tell


def test_joiner_error_after_tb_burns_cpace_code() -> None:
    offerer, offer = _offerer_awaiting_confirm()
    events = offerer.receive_data(error_frame(FailureReason.BUSY), now=0)
    assert events == failed_with(FailureReason.BUSY, remote=True)
    assert offer.state is OfferState.BURNED


@pytest.mark.parametrize("mode", _MODES)
def test_paired_offer_cannot_pair_a_second_joiner(mode: Mode) -> None:
    offer = make_offer(make_secret(mode))
    make_link(offer).run()
    assert offer.state is OfferState.PAIRED
    second = Link(
        joiner=make_joiner(offer.secret, channel=make_channel(cert_joiner=MALLORY_CERT)),
        offerer=make_offerer(offer, channel=make_channel(cert_joiner=MALLORY_CERT)),
    ).run()
    assert second.offerer_events == failed_with(FailureReason.PAIRING_FAILED)
    assert second.joiner_events == failed_with(FailureReason.PAIRING_FAILED, remote=True)
    assert offer.state is OfferState.PAIRED


# --- order, errors and terminal states ------------------------------------------------

_YB_TB: Final = bytes(range(32)) + bytes(64)
_ANY_FRAMES: Final = {
    FrameType.HMAC_REQUEST: encode_frame(FrameType.HMAC_REQUEST, bytes(32) + b"m"),
    FrameType.HMAC_RESPONSE: encode_frame(FrameType.HMAC_RESPONSE, bytes(32) + b"m"),
    FrameType.CPACE_SHARE_A: encode_frame(FrameType.CPACE_SHARE_A, bytes([9]) * 32 + b"m"),
    FrameType.CPACE_SHARE_B: encode_frame(FrameType.CPACE_SHARE_B, _YB_TB + b"m"),
    FrameType.CPACE_CONFIRM_A: encode_frame(FrameType.CPACE_CONFIRM_A, bytes(64)),
}


@pytest.mark.parametrize(
    "frame_type",
    [FrameType.HMAC_RESPONSE, FrameType.CPACE_SHARE_B, FrameType.CPACE_CONFIRM_A],
)
@pytest.mark.parametrize("mode", _MODES)
def test_offerer_awaiting_proof_refuses_other_frames_as_protocol_error(
    mode: Mode, frame_type: FrameType
) -> None:
    offer = make_offer(make_secret(mode))
    offerer = make_offerer(offer)
    assert offerer.receive_data(_ANY_FRAMES[frame_type], now=0) == failed_with(
        FailureReason.PROTOCOL_ERROR
    )
    assert offerer.data_to_send() == error_frame(FailureReason.PROTOCOL_ERROR)
    assert offerer.state is SessionState.FAILED
    assert offer.failures == 0


@pytest.mark.parametrize("frame_type", list(_ANY_FRAMES))
def test_offerer_awaiting_confirm_fails_on_anything_but_right_ta_and_spends_claim(
    frame_type: FrameType,
) -> None:
    offerer, offer = _offerer_awaiting_confirm()
    if frame_type is FrameType.CPACE_CONFIRM_A:
        expected = FailureReason.PAIRING_FAILED  # in order, but a wrong tag
    else:
        expected = FailureReason.PROTOCOL_ERROR
    assert offerer.receive_data(_ANY_FRAMES[frame_type], now=0) == failed_with(expected)
    assert offerer.data_to_send() == error_frame(expected)
    assert offer.state is OfferState.BURNED


@pytest.mark.parametrize(
    ("mode", "frame_type"),
    [
        (Mode.CPACE, FrameType.HMAC_REQUEST),
        (Mode.CPACE, FrameType.HMAC_RESPONSE),
        (Mode.CPACE, FrameType.CPACE_SHARE_A),
        (Mode.CPACE, FrameType.CPACE_CONFIRM_A),
        (Mode.HMAC, FrameType.HMAC_REQUEST),
        (Mode.HMAC, FrameType.CPACE_SHARE_A),
        (Mode.HMAC, FrameType.CPACE_SHARE_B),
        (Mode.HMAC, FrameType.CPACE_CONFIRM_A),
    ],
)
def test_joiner_refuses_out_of_order_frames_as_protocol_error(
    mode: Mode, frame_type: FrameType
) -> None:
    joiner = _started_joiner(mode)
    assert joiner.receive_data(_ANY_FRAMES[frame_type]) == failed_with(FailureReason.PROTOCOL_ERROR)
    assert joiner.data_to_send() == error_frame(FailureReason.PROTOCOL_ERROR)
    assert joiner.state is SessionState.FAILED


@pytest.mark.parametrize("frame_type", list(_ANY_FRAMES))
def test_joiner_refuses_any_frame_before_start(frame_type: FrameType) -> None:
    joiner = make_joiner(make_secret(Mode.CPACE))
    assert joiner.receive_data(_ANY_FRAMES[frame_type]) == failed_with(FailureReason.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "garbage",
    [b"\x02\x01\x00\x21", b"\x01\x55\x00\x01\x00", b"\x01\x13\xff\xff"],
    ids=["bad-version", "unknown-type", "huge-length"],
)
def test_broken_wire_format_is_protocol_error_on_both_sides(garbage: bytes) -> None:
    offerer = make_offerer(make_offer(make_secret(Mode.CPACE)))
    assert offerer.receive_data(garbage, now=0) == failed_with(FailureReason.PROTOCOL_ERROR)
    joiner = _started_joiner(Mode.CPACE)
    assert joiner.receive_data(garbage) == failed_with(FailureReason.PROTOCOL_ERROR)


@pytest.mark.parametrize("mode", _MODES)
@pytest.mark.parametrize("outcome", ["paired", "failed"])
def test_terminal_session_refuses_further_input(mode: Mode, outcome: str) -> None:
    offer = make_offer(make_secret(mode))
    joiner_secret = offer.secret if outcome == "paired" else _wrong_secret(mode)
    link = make_link(offer, joiner_secret).run()
    assert link.joiner.finished
    assert link.offerer.finished
    for data in (b"", error_frame(1)):
        with pytest.raises(RuntimeError, match="no more input"):
            link.joiner.receive_data(data)
        with pytest.raises(RuntimeError, match="no more input"):
            link.offerer.receive_data(data, now=0)
    assert link.joiner.connection_lost() is None
    assert link.offerer.connection_lost() is None


def test_start_twice_is_a_local_error() -> None:
    joiner = make_joiner(make_secret(Mode.CPACE))
    joiner.start()
    with pytest.raises(RuntimeError, match="twice"):
        joiner.start()


@pytest.mark.parametrize("scalar", [None, b"", bytes(31), bytes(33)])
def test_cpace_sessions_need_a_32_byte_scalar(scalar: bytes | None) -> None:
    secret = make_secret(Mode.CPACE)
    with pytest.raises(ValueError, match="scalar"):
        JoinerSession(secret=secret, channel=make_channel(), name="j", scalar=scalar)
    with pytest.raises(ValueError, match="scalar"):
        OffererSession(offer=make_offer(secret), channel=make_channel(), name="o", scalar=scalar)


def test_hmac_sessions_need_no_scalar() -> None:
    secret = make_secret(Mode.HMAC)
    link = Link(
        joiner=JoinerSession(secret=secret, channel=make_channel(), name="j"),
        offerer=OffererSession(offer=make_offer(secret), channel=make_channel(), name="o"),
    ).run()
    assert [type(event) for event in link.joiner_events + link.offerer_events] == [
        Paired, Paired, Confirmed]


# --- ERROR frames from the peer -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1, FailureReason.PAIRING_FAILED),
        (2, FailureReason.PROTOCOL_ERROR),
        (3, FailureReason.MODE_MISMATCH),
        (4, FailureReason.BUSY),
        (5, FailureReason.EXPIRED),
        (7, FailureReason.STORE_FAILED),
        (8, FailureReason.CERTIFICATE_REFUSED),
        (0, FailureReason.PROTOCOL_ERROR),
        (9, FailureReason.PROTOCOL_ERROR),
        (0x7F, FailureReason.PROTOCOL_ERROR),
        (0xFF, FailureReason.PROTOCOL_ERROR),
        # CONNECTION_LOST is local only; on the wire 6 is unknown.
        (6, FailureReason.PROTOCOL_ERROR),
    ],
)
def test_error_frame_from_peer_ends_session_as_remote_failure(
    code: int, reason: FailureReason
) -> None:
    joiner = _started_joiner(Mode.CPACE)
    assert joiner.receive_data(error_frame(code)) == failed_with(reason, remote=True)
    assert joiner.data_to_send() == b""  # an ERROR is never answered with an ERROR
    offer = make_offer(make_secret(Mode.CPACE))
    offerer = make_offerer(offer)
    assert offerer.receive_data(error_frame(code), now=0) == failed_with(reason, remote=True)
    assert offerer.data_to_send() == b""
    assert offer.failures == 0
    assert offerer.state is SessionState.FAILED


# --- names ------------------------------------------------------------------------------

_BAD_NAMES: Final = [
    b"\xff",
    b"abc\xc3",
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xc0\x80",  # overlong NUL
    b"a\x00b",
    b"line\nbreak",
    b"tab\there",
    b"\x1b[2J",
    b"del\x7f",
    "nel\u0085".encode(),
    "c1\u009f".encode(),
]


@pytest.mark.parametrize("name", _BAD_NAMES)
@pytest.mark.parametrize("mode", _MODES)
def test_offerer_refuses_bad_joiner_name_as_protocol_error(mode: Mode, name: bytes) -> None:
    if mode is Mode.CPACE:
        frame = encode_frame(FrameType.CPACE_SHARE_A, bytes([9]) * 32 + name)
    else:
        frame = encode_frame(FrameType.HMAC_REQUEST, bytes(32) + name)
    offerer = make_offerer(make_offer(make_secret(mode)))
    assert offerer.receive_data(frame, now=0) == failed_with(FailureReason.PROTOCOL_ERROR)


@pytest.mark.parametrize("name", _BAD_NAMES)
@pytest.mark.parametrize("mode", _MODES)
def test_joiner_refuses_bad_offerer_name_as_protocol_error(mode: Mode, name: bytes) -> None:
    if mode is Mode.CPACE:
        frame = encode_frame(FrameType.CPACE_SHARE_B, _YB_TB + name)
    else:
        frame = encode_frame(FrameType.HMAC_RESPONSE, bytes(32) + name)
    joiner = _started_joiner(mode)
    assert joiner.receive_data(frame) == failed_with(FailureReason.PROTOCOL_ERROR)


def test_bad_name_from_honest_offerer_with_right_secret_still_fails_joiner() -> None:
    # Replace the offerer's name inside a genuine HMAC_RESPONSE: m2 checks, the name not.
    offer = make_offer(make_secret(Mode.HMAC))
    link = make_link(offer)

    def rename(way: Direction, data: bytes) -> bytes:
        if way is Direction.TO_JOINER:
            (frame,) = split_frames(data)
            return encode_frame(frame.type, frame.body[:32] + b"evil\x1b[0m")
        return data

    link.tamper = rename
    link.run()
    assert link.joiner_events == failed_with(FailureReason.PROTOCOL_ERROR)


# --- only Paired commits ------------------------------------------------------------------


def _scenarios() -> dict[str, Callable[[], tuple[Link, Offer, bool]]]:
    def honest(mode: Mode) -> Callable[[], tuple[Link, Offer, bool]]:
        def run() -> tuple[Link, Offer, bool]:
            offer = make_offer(make_secret(mode))
            return make_link(offer).run(), offer, True

        return run

    def wrong(mode: Mode) -> Callable[[], tuple[Link, Offer, bool]]:
        def run() -> tuple[Link, Offer, bool]:
            offer = make_offer(make_secret(mode))
            return make_link(offer, _wrong_secret(mode)).run(), offer, False

        return run

    def mismatch(mode: Mode) -> Callable[[], tuple[Link, Offer, bool]]:
        def run() -> tuple[Link, Offer, bool]:
            offer = make_offer(make_secret(mode))
            return make_link(offer, make_secret(_other(mode))).run(), offer, False

        return run

    def expired(mode: Mode) -> Callable[[], tuple[Link, Offer, bool]]:
        def run() -> tuple[Link, Offer, bool]:
            offer = make_offer(make_secret(mode), expires_at=1.0)
            return make_link(offer, now=5.0).run(), offer, False

        return run

    def dropped(mode: Mode) -> Callable[[], tuple[Link, Offer, bool]]:
        def run() -> tuple[Link, Offer, bool]:
            offer = make_offer(make_secret(mode))
            link = make_link(offer)
            link.tamper = lambda way, data: b""
            return link.run(), offer, False

        return run

    table: dict[str, Callable[[], tuple[Link, Offer, bool]]] = {}
    for mode in _MODES:
        for name, build in [
            ("honest", honest),
            ("wrong-secret", wrong),
            ("mode-mismatch", mismatch),
            ("expired", expired),
            ("all-dropped", dropped),
        ]:
            table[f"{mode.value}-{name}"] = build(mode)
    return table


_SCENARIOS: Final = _scenarios()


@pytest.mark.parametrize("scenario", list(_SCENARIOS))
def test_each_side_ends_with_one_event_and_only_paired_commits(scenario: str) -> None:
    link, offer, honest = _SCENARIOS[scenario]()
    assert [type(e) for e in link.joiner_events] == [Paired if honest else Failed]
    assert [type(e) for e in link.offerer_events] == (
        [Paired, Confirmed] if honest else [Failed])
    assert (offer.state is OfferState.PAIRED) is honest
    expected_state = SessionState.DONE if honest else SessionState.FAILED
    assert link.joiner.state is expected_state
    assert link.offerer.state is expected_state


# --- trailing bytes after the outcome --------------------------------------------------


@pytest.mark.parametrize("mode", _MODES)
def test_frames_behind_the_final_proof_are_judged_only_after_the_commit(mode: Mode) -> None:
    offer = make_offer(make_secret(mode))
    link = make_link(offer)
    link.joiner.start()
    if mode is Mode.CPACE:
        link.to_offerer()
        link.to_joiner()
    final_proof = link.joiner.data_to_send()
    events = link.offerer.receive_data(final_proof + error_frame(1), now=0)
    assert [type(event) for event in events] == [Paired]
    assert _state(link.offerer) is SessionState.COMMITTING
    with pytest.raises(RuntimeError):
        link.offerer.receive_data(b"", now=0)  # the commit's outcome comes first
    # After the commit, the joiner's ERROR says it stores nothing: the offerer undoes.
    assert link.offerer.committed() == failed_with(FailureReason.PAIRING_FAILED, remote=True)
    assert offer.state is OfferState.PAIRED
    sent = split_frames(link.offerer.data_to_send())
    assert FrameType.ERROR not in [frame.type for frame in sent]


def test_trailing_bytes_after_a_failure_add_no_second_failure() -> None:
    offer = make_offer(make_secret(Mode.HMAC))
    joiner = make_joiner(_wrong_secret(Mode.HMAC))
    joiner.start()
    offerer = make_offerer(offer)
    wrong_m1 = joiner.data_to_send()
    events = offerer.receive_data(wrong_m1 + wrong_m1, now=0)
    assert events == failed_with(FailureReason.PAIRING_FAILED)
    assert offerer.data_to_send() == error_frame(FailureReason.PAIRING_FAILED)
    assert offer.failures == 1
