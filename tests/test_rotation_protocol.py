"""The sync machine without I/O: both directions, frame order, malformed bodies."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certpair.protocol.rotation import (
    Answered,
    RotationOffered,
    RotationToTell,
    StatementRefused,
    SyncDone,
    SyncEvent,
    SyncFailed,
    SyncSession,
    SyncState,
    encode_rotation,
    sign_rotation,
)
from certpair.protocol.sync_frames import SyncFrameType, SyncResult, encode_sync_frame
from tests.helpers import make_self_signed_cert

OLD, NEW, PEER = (make_self_signed_cert(n, s) for n, s in (("a", 1), ("a", 2), ("b", 3)))


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"key %d" % seed).digest())


def rotation(new_seed: int = 2, new_cert: bytes = NEW) -> RotationToTell:
    return RotationToTell(old_key=key(1), new_key=key(new_seed), new_cert=new_cert)


def pair(tell: RotationToTell | None = None, answer: RotationToTell | None = None
         ) -> tuple[SyncSession, SyncSession]:
    a = SyncSession(own_cert=OLD, peer_cert=PEER, nonce=b"\x01" * 32, rotation=tell)
    b = SyncSession(own_cert=PEER, peer_cert=OLD, nonce=b"\x02" * 32, rotation=answer)
    a.start()
    b.start()
    return a, b


def exchange(a: SyncSession, b: SyncSession) -> tuple[list[SyncEvent], list[SyncEvent]]:
    seen_a: list[SyncEvent] = []
    seen_b: list[SyncEvent] = []
    for _ in range(4):
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if to_a and not a.finished:
            seen_a += a.receive_data(to_a)
        if to_b and not b.finished:
            seen_b += b.receive_data(to_b)
        for seen, side in ((seen_a, a), (seen_b, b)):
            if seen and isinstance(seen[-1], RotationOffered):
                seen.extend(side.accept())
    return seen_a, seen_b


def test_a_rotation_told_is_offered_then_acknowledged_only_after_accept() -> None:
    a, b = pair(tell=rotation())
    seen_a, seen_b = exchange(a, b)
    assert seen_b[0] == RotationOffered(new_cert=NEW)
    assert Answered(result=SyncResult.ACCEPTED, told=True) in seen_a
    assert a.state is SyncState.DONE and b.state is SyncState.DONE


def test_both_sides_may_rotate_in_one_exchange() -> None:
    other = RotationToTell(old_key=key(3), new_key=key(4), new_cert=make_self_signed_cert("b", 4))
    a, b = pair(tell=rotation(), answer=other)
    seen_a, seen_b = exchange(a, b)
    assert RotationOffered(new_cert=other.new_cert) in seen_a
    assert RotationOffered(new_cert=NEW) in seen_b
    assert SyncDone() in seen_a and SyncDone() in seen_b


def test_a_refusal_is_answered_with_its_reason_and_later_frames_wait_for_it() -> None:
    a, b = pair(tell=rotation())
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    # a's STATEMENT and its ANSWER to b arrive together; the ANSWER waits for the verdict.
    assert b.receive_data(a.data_to_send()) == [RotationOffered(new_cert=NEW)]
    assert b.state is SyncState.AWAIT_VERDICT
    assert b.refuse(SyncResult.CONFLICT) == [
        Answered(result=SyncResult.ACCEPTED, told=False), SyncDone()]
    assert a.receive_data(b.data_to_send()) == [
        Answered(result=SyncResult.CONFLICT, told=True), SyncDone()]


def test_a_new_key_that_did_not_sign_is_refused_by_the_machine_itself() -> None:
    a, b = pair(tell=rotation(new_seed=9))  # signs with a key that is not NEW's
    seen_a, seen_b = exchange(a, b)
    assert seen_b[0] == StatementRefused(result=SyncResult.BAD_SIGNATURE)
    assert Answered(result=SyncResult.BAD_SIGNATURE, told=True) in seen_a


def test_accept_without_an_offer_is_a_local_error() -> None:
    a, _ = pair()
    with pytest.raises(RuntimeError):
        a.accept()


def _after_hello(body_type: SyncFrameType, body: bytes) -> list[SyncEvent]:
    a, b = pair()
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    return b.receive_data(encode_sync_frame(body_type, body))


@pytest.mark.parametrize(("frame_type", "body"), [
    (SyncFrameType.ANSWER, b"\x00"),                       # answer before statement
    (SyncFrameType.HELLO, b"\x03" * 32),                   # a second hello
    (SyncFrameType.STATEMENT, b"\x00\x00"),                # trailing bytes after nothing
    (SyncFrameType.STATEMENT, b"\x01\x00\x05abc"),         # truncated certificate
    (SyncFrameType.STATEMENT, encode_rotation(NEW, b"s", b"t") + b"x"),  # trailing bytes
])
def test_out_of_order_or_malformed_frames_fail_the_session(frame_type: SyncFrameType,
                                                           body: bytes) -> None:
    events = _after_hello(frame_type, body)
    assert isinstance(events[-1], SyncFailed)


def test_unknown_statement_kind_is_answered_unsupported_not_fatal() -> None:
    events = _after_hello(SyncFrameType.STATEMENT, b"\x02reserved")
    assert events == [StatementRefused(result=SyncResult.UNSUPPORTED)]


def test_a_reflected_nonce_and_bad_headers_fail() -> None:
    a = SyncSession(own_cert=OLD, peer_cert=PEER, nonce=b"\x01" * 32)
    a.start()
    assert isinstance(a.receive_data(a.data_to_send())[-1], SyncFailed)
    for header in (b"\x02\x21\x00\x20", b"\x01\x99\x00\x01", b"\x01\x21\x00\x21",
                   b"\x01\x22\x10\x01"):
        b = SyncSession(own_cert=OLD, peer_cert=PEER, nonce=b"\x01" * 32)
        b.start()
        assert isinstance(b.receive_data(header)[-1], SyncFailed), header
        with pytest.raises(RuntimeError):
            b.receive_data(b"more")


def test_signatures_cover_nonce_and_both_connection_certificates() -> None:
    sig_old, sig_new = sign_rotation(rotation(), cert_old=OLD, cert_verifier=PEER,
                                     nonce=b"\x02" * 32)
    variants = [sign_rotation(rotation(), cert_old=OLD, cert_verifier=PEER, nonce=b"\x03" * 32),
                sign_rotation(rotation(), cert_old=OLD, cert_verifier=NEW, nonce=b"\x02" * 32),
                sign_rotation(rotation(), cert_old=PEER, cert_verifier=PEER, nonce=b"\x02" * 32)]
    for other_old, other_new in variants:
        assert other_old != sig_old and other_new != sig_new
