"""Regenerate the protocol test vectors in tests/vectors/ (deterministic).

Certificates use Ed25519 keys from fixed seeds, a fixed serial and fixed dates, so
the DER (and every value derived from it) is the same on every run. Usage:

    .venv/bin/python scripts/make_vectors.py        # rewrites tests/vectors/*.json
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certpair.codes import parse_secret
from certpair.protocol import cpace
from certpair.protocol.events import Channel
from certpair.protocol.hmac_proof import REQUEST_LABEL, RESPONSE_LABEL, compute
from certpair.protocol.offer import Offer
from certpair.protocol.rotation import (
    NEW_KEY_LABEL,
    OLD_KEY_LABEL,
    RotationToTell,
    SyncSession,
    rotation_transcript,
)
from certpair.protocol.session import (
    AD_JOINER_LABEL,
    AD_OFFERER_LABEL,
    JoinerSession,
    OffererSession,
    cpace_ad,
    cpace_ci,
)

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def fixed_cert(seed_byte: int, name: str) -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(seed_byte)
        .not_valid_before(start)
        .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC))
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.DER)


def rotation_vector() -> dict[str, str]:
    """alpha (seed 0x0A) rotates to a new key (seed 0x0C) and tells beta (seed 0x0B)."""
    cert_old, cert_verifier = fixed_cert(0x0A, "alpha"), fixed_cert(0x0B, "beta")
    cert_new = fixed_cert(0x0C, "alpha")
    old_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x0A]) * 32)
    new_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x0C]) * 32)
    nonce_rotating, nonce_verifier = bytes(range(0x40, 0x60)), bytes(range(0x60, 0x80))
    rotating = SyncSession(own_cert=cert_old, peer_cert=cert_verifier, nonce=nonce_rotating,
                           rotation=RotationToTell(old_key=old_key, new_key=new_key,
                                                   new_cert=cert_new))
    verifier = SyncSession(own_cert=cert_verifier, peer_cert=cert_old, nonce=nonce_verifier)
    rotating.start()
    verifier.start()
    hello_rotating, hello_verifier = rotating.data_to_send(), verifier.data_to_send()
    rotating.receive_data(hello_verifier)
    verifier.receive_data(hello_rotating)
    statement_rotating, statement_verifier = rotating.data_to_send(), verifier.data_to_send()
    rotating.receive_data(statement_verifier)
    offered = verifier.receive_data(statement_rotating)
    assert offered, "the vector statement must verify"
    verifier.accept()
    answer_rotating, answer_verifier = rotating.data_to_send(), verifier.data_to_send()
    parts = {"cert_old": cert_old, "cert_new": cert_new, "cert_verifier": cert_verifier,
             "nonce": nonce_verifier}
    old_tbs = rotation_transcript(OLD_KEY_LABEL, **parts)
    new_tbs = rotation_transcript(NEW_KEY_LABEL, **parts)
    return {
        "source": "scripts/make_vectors.py; docs/PROTOCOL.md 'Key rotation'",
        "cert_old_der_hex": cert_old.hex(),
        "cert_new_der_hex": cert_new.hex(),
        "cert_verifier_der_hex": cert_verifier.hex(),
        "old_key_seed_hex": (bytes([0x0A]) * 32).hex(),
        "new_key_seed_hex": (bytes([0x0C]) * 32).hex(),
        "nonce_rotating_hex": nonce_rotating.hex(),
        "nonce_verifier_hex": nonce_verifier.hex(),
        "signed_by_old_key_hex": old_tbs.hex(),
        "signed_by_new_key_hex": new_tbs.hex(),
        "sig_old_hex": old_key.sign(old_tbs).hex(),
        "sig_new_hex": new_key.sign(new_tbs).hex(),
        "frame_hello_rotating_hex": hello_rotating.hex(),
        "frame_hello_verifier_hex": hello_verifier.hex(),
        "frame_statement_rotating_hex": statement_rotating.hex(),
        "frame_statement_verifier_hex": statement_verifier.hex(),
        "frame_answer_verifier_hex": answer_verifier.hex(),
        "frame_answer_rotating_hex": answer_rotating.hex(),
    }


def main() -> None:
    cert_joiner = fixed_cert(0x0B, "beta")
    cert_offerer = fixed_cert(0x0A, "alpha")
    key = bytes(range(10))
    hmac_vector = {
        "source": "scripts/make_vectors.py; docs/PROTOCOL.md 'hmac mode'",
        "cert_joiner_der_hex": cert_joiner.hex(),
        "cert_offerer_der_hex": cert_offerer.hex(),
        "key_hex": key.hex(),
        "m1_hex": compute(key, REQUEST_LABEL, cert_joiner, cert_offerer).hex(),
        "m2_hex": compute(key, RESPONSE_LABEL, cert_joiner, cert_offerer).hex(),
    }
    code = parse_secret("1234-5678-6")
    exporter = bytes(range(0x20, 0x40))
    ya, yb = bytes([0x11]) * 32, bytes([0x22]) * 32
    channel = Channel(cert_offerer=cert_offerer, cert_joiner=cert_joiner, exporter=exporter)
    joiner = JoinerSession(secret=code, channel=channel, name="beta", scalar=ya)
    offerer = OffererSession(offer=Offer(secret=code, expires_at=1e12), channel=channel,
                             name="alpha", scalar=yb)
    joiner.start()
    share_a = joiner.data_to_send()
    offerer.receive_data(share_a, now=0.0)
    share_b = offerer.data_to_send()
    joiner.receive_data(share_b)
    confirm_a = joiner.data_to_send()
    events = offerer.receive_data(confirm_a, now=0.0)
    assert events, "the vector run must pair"
    offerer.committed()
    committed_o = offerer.data_to_send()
    assert joiner.receive_data(committed_o), "the joiner commits on the offerer's word"
    joiner.committed()
    committed_j = joiner.data_to_send()
    assert offerer.receive_data(committed_j, now=0.0), "the offerer is confirmed"
    assert committed_o == committed_j
    ci = cpace_ci(channel)
    g = cpace.calculate_generator(code.value, ci, exporter)
    big_ya, big_yb = cpace.public_share(ya, g), cpace.public_share(yb, g)
    ada, adb = cpace_ad(AD_JOINER_LABEL, b"beta"), cpace_ad(AD_OFFERER_LABEL, b"alpha")
    k = cpace.shared_point(ya, big_yb)
    isk = cpace.intermediate_session_key(exporter, k, big_ya, ada, big_yb, adb)
    mac_key = cpace.confirmation_key(exporter, isk)
    cpace_vector = {
        "source": "scripts/make_vectors.py; docs/PROTOCOL.md 'cpace mode'",
        "cert_joiner_der_hex": cert_joiner.hex(),
        "cert_offerer_der_hex": cert_offerer.hex(),
        "exporter_hex": exporter.hex(),
        "code": code.display,
        "prs_hex": code.value.hex(),
        "name_joiner": "beta",
        "name_offerer": "alpha",
        "scalar_joiner_hex": ya.hex(),
        "scalar_offerer_hex": yb.hex(),
        "ci_hex": ci.hex(),
        "generator_hex": g.hex(),
        "ADa_hex": ada.hex(),
        "ADb_hex": adb.hex(),
        "Ya_hex": big_ya.hex(),
        "Yb_hex": big_yb.hex(),
        "ISK_hex": isk.hex(),
        "mac_key_hex": mac_key.hex(),
        "Ta_hex": cpace.confirmation_tag(mac_key, big_ya, ada).hex(),
        "Tb_hex": cpace.confirmation_tag(mac_key, big_yb, adb).hex(),
        "frame_share_a_hex": share_a.hex(),
        "frame_share_b_hex": share_b.hex(),
        "frame_confirm_a_hex": confirm_a.hex(),
        "frame_committed_hex": committed_o.hex(),
    }
    for name, vector in (("hmac_vector.json", hmac_vector), ("cpace_vector.json", cpace_vector),
                         ("rotation_vector.json", rotation_vector())):
        (OUT / name).write_text(json.dumps(vector, indent=2) + "\n")


if __name__ == "__main__":
    main()
