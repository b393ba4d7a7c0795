"""The test vectors published in docs/PROTOCOL.md, checked against the implementation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from certpair.codes import parse_secret
from certpair.protocol import cpace
from certpair.protocol.events import Channel, Confirmed, Paired
from certpair.protocol.hmac_proof import REQUEST_LABEL, RESPONSE_LABEL, compute
from certpair.protocol.offer import Offer
from certpair.protocol.session import JoinerSession, OffererSession

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
