"""Refused key rotations: each a real adversary over real mutual TLS against a real
``certpair serve`` (the real sync machine and store checks), and nothing stored after.

The adversary (:class:`~tests.rotation_util.RawSync`) connects with a paired device's
home, so it holds that device's key, and writes its STATEMENT itself.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certpair.identity import PrivateKey, _self_signed, fingerprint
from certpair.protocol.rotation import RotationToTell, encode_rotation, sign_rotation
from certpair.protocol.sync_frames import SyncResult
from tests.attacks.forged_certs import copy_names
from tests.rotation_util import Fleet, RawSync, fleet, store_rows

__all__ = ["fleet"]


def new_cert(name: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _self_signed(key, name).public_bytes(serialization.Encoding.DER)


def statement(raw: RawSync, old_key: PrivateKey, new_key: PrivateKey, cert: bytes,
              nonce: bytes | None = None) -> bytes:
    rotation = RotationToTell(old_key=old_key, new_key=new_key, new_cert=cert)
    sig_old, sig_new = sign_rotation(rotation, cert_old=raw.own_cert, cert_verifier=raw.peer_cert,
                                     nonce=nonce or raw.peer_nonce)
    return encode_rotation(cert, sig_old, sig_new)


def successors(home: Path) -> list[tuple[object, ...]]:
    return store_rows(home, "SELECT peer_fingerprint, fingerprint, state FROM successors")


def test_rotation_statement_not_signed_by_the_stored_key_is_refused(fleet: Fleet) -> None:
    server = fleet.serve("beta")
    thief_key, _ = new_cert("alpha")  # any key but alpha's stored one
    new_key, cert = new_cert("alpha")
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, thief_key, new_key, cert)) is SyncResult.BAD_SIGNATURE
    raw.close()
    assert successors(fleet.home("beta")) == []


def test_another_peer_relaying_a_rotation_statement_is_refused(fleet: Fleet) -> None:
    # gamma (also paired with beta) relays a statement alpha signed, to rotate itself
    # onto alpha's new key: cert_old in the transcript is gamma's, so sig_old fails.
    server = fleet.serve("beta")
    new_key, cert = new_cert("alpha")
    alpha_view = RawSync(fleet.home("alpha"), server.port)
    gamma = RawSync(fleet.home("gamma"), server.port)
    signed_by_alpha = RotationToTell(old_key=fleet.ids["alpha"].key, new_key=new_key,
                                     new_cert=cert)
    sig_old, sig_new = sign_rotation(signed_by_alpha, cert_old=alpha_view.own_cert,
                                     cert_verifier=gamma.peer_cert, nonce=gamma.peer_nonce)
    assert gamma.tell(encode_rotation(cert, sig_old, sig_new)) is SyncResult.BAD_SIGNATURE
    alpha_view.close()
    gamma.close()
    assert successors(fleet.home("beta")) == []


def test_new_key_signature_replayed_from_another_session_is_refused(fleet: Fleet) -> None:
    # The holder of alpha's current key has a new-key signature from an earlier
    # connection (other nonce) but not the new key: sig_new does not bind to this one.
    server = fleet.serve("beta")
    new_key, cert = new_cert("alpha")
    first = RawSync(fleet.home("alpha"), server.port)
    recorded = statement(first, fleet.ids["alpha"].key, new_key, cert)
    first.close()
    second = RawSync(fleet.home("alpha"), server.port)
    assert second.peer_nonce != first.peer_nonce
    fresh = statement(second, fleet.ids["alpha"].key, new_key, cert)
    sig_new_offset = len(recorded) - 64 - 1
    spliced = fresh[:len(fresh) - len(recorded) + sig_new_offset] + recorded[sig_new_offset:]
    assert second.tell(spliced) is SyncResult.BAD_SIGNATURE
    second.close()
    third = RawSync(fleet.home("alpha"), server.port)
    assert third.tell(recorded) is SyncResult.BAD_SIGNATURE  # the whole statement replayed
    third.close()
    assert successors(fleet.home("beta")) == []


def test_successor_colliding_with_another_peer_is_refused(fleet: Fleet) -> None:
    server = fleet.serve("beta")
    gamma_cert = fleet.ids["gamma"].cert_der
    look_alike_key, look_alike = copy_names(gamma_cert)  # gamma's subject and names
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, fleet.ids["alpha"].key, look_alike_key, look_alike)) \
        is SyncResult.CONFLICT
    raw.close()
    # Even holding gamma's very key (alpha and gamma colluding): gamma's certificate
    # itself cannot become alpha's successor.
    raw = RawSync(fleet.home("alpha"), server.port)
    assert raw.tell(statement(raw, fleet.ids["alpha"].key, fleet.ids["gamma"].key,
                              gamma_cert)) is SyncResult.CONFLICT
    raw.close()
    assert successors(fleet.home("beta")) == []


def test_second_rotation_racing_the_first_loses_and_the_first_stays(fleet: Fleet) -> None:
    server = fleet.serve("beta")
    old_key = fleet.ids["alpha"].key
    racers = [RawSync(fleet.home("alpha"), server.port) for _ in range(2)]
    candidates = [new_cert("alpha") for _ in racers]
    bodies = [statement(raw, old_key, key, cert)
              for raw, (key, cert) in zip(racers, candidates, strict=True)]
    results: list[SyncResult | None] = [None, None]
    go = threading.Barrier(2)

    def race(i: int) -> None:
        go.wait()
        results[i] = racers[i].tell(bodies[i])

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.name for r in results if r is not None) == ["ACCEPTED", "CONFLICT"]
    winner = candidates[results.index(SyncResult.ACCEPTED)][1]
    assert successors(fleet.home("beta")) == [
        (fleet.ids["alpha"].fingerprint, fingerprint(winner), "pending")]
    # A later different rotation is refused too; the stored one again is accepted.
    late = RawSync(fleet.home("alpha"), server.port)
    assert late.tell(statement(late, old_key, *new_cert("alpha"))) is SyncResult.CONFLICT
    late.close()
    again = RawSync(fleet.home("alpha"), server.port)
    winner_key = candidates[results.index(SyncResult.ACCEPTED)][0]
    assert again.tell(statement(again, old_key, winner_key, winner)) is SyncResult.ACCEPTED
    again.close()
    for raw in racers:
        raw.close()


def test_rotation_statement_from_a_peer_no_longer_stored_is_refused(fleet: Fleet) -> None:
    server = fleet.serve("beta")
    raw = RawSync(fleet.home("alpha"), server.port)  # admitted while still paired
    unpaired = fleet.run("beta", "unpair", "alpha")
    assert unpaired.returncode == 0, unpaired.stderr
    # serve cuts an unpaired device's open connections within ~100 ms (trusted/cuts.py):
    # the statement is answered NOT_A_PEER if it gets there first, else the cut ends it.
    # Either way nothing is stored (the NOT_A_PEER rule itself: test_rotation_store.py).
    try:
        answer = raw.tell(statement(raw, fleet.ids["alpha"].key, *new_cert("alpha")))
    except OSError:
        answer = None
    assert answer in {SyncResult.NOT_A_PEER, None}
    raw.close()
    assert successors(fleet.home("beta")) == []
