"""The test vectors published in docs/PROTOCOL.md, checked against the implementation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certpair.codes import parse_secret
from certpair.protocol import cpace
from certpair.protocol.events import Channel, Confirmed, Paired
from certpair.protocol.hmac_proof import REQUEST_LABEL, RESPONSE_LABEL, compute
from certpair.protocol.offer import Offer
from certpair.protocol.rotation import (
    NEW_KEY_LABEL,
    OLD_KEY_LABEL,
    Answered,
    RotationOffered,
    RotationToTell,
    SyncDone,
    SyncSession,
    rotation_transcript,
)
from certpair.protocol.session import JoinerSession, OffererSession
from certpair.protocol.sync_frames import SyncResult

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def test_hmac_m1_m2_match_published_vector() -> None:
    v = _load("hmac_vector.json")
    joiner = bytes.fromhex(v["cert_joiner_der_hex"])
    offerer = bytes.fromhex(v["cert_offerer_der_hex"])
    key = bytes.fromhex(v["key_hex"])
    assert compute(key, REQUEST_LABEL, joiner, offerer).hex() == v["m1_hex"]
    assert compute(key, RESPONSE_LABEL, joiner, offerer).hex() == v["m2_hex"]


def test_cpace_transcript_matches_published_vector() -> None:
    v = _load("cpace_vector.json")
    channel = Channel(
        cert_offerer=bytes.fromhex(v["cert_offerer_der_hex"]),
        cert_joiner=bytes.fromhex(v["cert_joiner_der_hex"]),
        exporter=bytes.fromhex(v["exporter_hex"]),
    )
    code = parse_secret(v["code"])
    assert code.value.hex() == v["prs_hex"]
    assert cpace.calculate_generator(code.value, bytes.fromhex(v["ci_hex"]),
                                     channel.exporter).hex() == v["generator_hex"]
    joiner = JoinerSession(secret=code, channel=channel, name=v["name_joiner"],
                           scalar=bytes.fromhex(v["scalar_joiner_hex"]))
    offerer = OffererSession(offer=Offer(secret=code, expires_at=1e12), channel=channel,
                             name=v["name_offerer"], scalar=bytes.fromhex(v["scalar_offerer_hex"]))
    joiner.start()
    share_a = joiner.data_to_send()
    assert share_a.hex() == v["frame_share_a_hex"]
    assert offerer.receive_data(share_a, now=0.0) == []
    share_b = offerer.data_to_send()
    assert share_b.hex() == v["frame_share_b_hex"]
    assert share_b[4:36].hex() == v["Yb_hex"]
    assert share_b[36:100].hex() == v["Tb_hex"]
    joined = joiner.receive_data(share_b)
    confirm_a = joiner.data_to_send()
    assert confirm_a.hex() == v["frame_confirm_a_hex"]
    assert confirm_a[4:].hex() == v["Ta_hex"]
    offered = offerer.receive_data(confirm_a, now=0.0)
    assert joined == []  # the joiner waits for the offerer's word
    assert [type(e) for e in offered] == [Paired]
    assert offerer.data_to_send() == b""  # nothing goes out before the commit
    offerer.committed()
    committed = offerer.data_to_send()
    assert committed.hex() == v["frame_committed_hex"]
    assert [type(e) for e in joiner.receive_data(committed)] == [Paired]
    joiner.committed()
    assert joiner.data_to_send().hex() == v["frame_committed_hex"]
    assert [type(e) for e in offerer.receive_data(committed, now=0.0)] == [Confirmed]


def test_rotation_exchange_matches_published_vector() -> None:
    v = _load("rotation_vector.json")
    cert_old, cert_new, cert_verifier = (bytes.fromhex(v[f"cert_{n}_der_hex"])
                                         for n in ("old", "new", "verifier"))
    old_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["old_key_seed_hex"]))
    new_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["new_key_seed_hex"]))
    nonce_v = bytes.fromhex(v["nonce_verifier_hex"])
    parts = {"cert_old": cert_old, "cert_new": cert_new, "cert_verifier": cert_verifier,
             "nonce": nonce_v}
    assert rotation_transcript(OLD_KEY_LABEL, **parts).hex() == v["signed_by_old_key_hex"]
    assert rotation_transcript(NEW_KEY_LABEL, **parts).hex() == v["signed_by_new_key_hex"]
    rotating = SyncSession(own_cert=cert_old, peer_cert=cert_verifier,
                           nonce=bytes.fromhex(v["nonce_rotating_hex"]),
                           rotation=RotationToTell(old_key=old_key, new_key=new_key,
                                                   new_cert=cert_new))
    verifier = SyncSession(own_cert=cert_verifier, peer_cert=cert_old, nonce=nonce_v)
    rotating.start()
    verifier.start()
    assert rotating.data_to_send().hex() == v["frame_hello_rotating_hex"]
    assert verifier.data_to_send().hex() == v["frame_hello_verifier_hex"]
    assert rotating.receive_data(bytes.fromhex(v["frame_hello_verifier_hex"])) == []
    assert verifier.receive_data(bytes.fromhex(v["frame_hello_rotating_hex"])) == []
    statement = rotating.data_to_send()
    assert statement.hex() == v["frame_statement_rotating_hex"]
    assert v["sig_old_hex"] in statement.hex() and v["sig_new_hex"] in statement.hex()
    assert verifier.data_to_send().hex() == v["frame_statement_verifier_hex"]
    assert verifier.receive_data(statement) == [RotationOffered(new_cert=cert_new)]
    verifier.accept()
    assert verifier.data_to_send().hex() == v["frame_answer_verifier_hex"]
    rotating.receive_data(bytes.fromhex(v["frame_statement_verifier_hex"]))
    assert rotating.data_to_send().hex() == v["frame_answer_rotating_hex"]
    told = rotating.receive_data(bytes.fromhex(v["frame_answer_verifier_hex"]))
    assert told == [Answered(result=SyncResult.ACCEPTED, told=True), SyncDone()]
