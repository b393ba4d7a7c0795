"""The seed's scheme with a short K falls to one captured m1: the attack that must work.

This is the answer to the seed's question "how short can K be?" made concrete. The
seed's hmac mode is forced onto a 6-digit key through the library API (the CLI and
``parse_secret`` refuse such a key for hmac mode). Mallory poses as the offerer, so the
honest joiner sends her ``m1 = HMAC(K, "request" || cert_joiner || cert_mallory)``.
Everything in that message except K is known to her, so she tries every 6-digit K
offline, answers the joiner with a correct m2 (it trusts her), and joins the real
offerer with the recovered K (it trusts her too).

The recovery time and rate are printed (run with ``-s``) and written as JSON under the
test's temporary directory; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, hmac

from certpair.codes import Mode, Secret
from certpair.net import run_join
from certpair.protocol import hmac_proof
from certpair.protocol.frames import FrameType, encode_frame
from tests.attacks.honest import MakeDevice
from tests.attacks.mitm import (
    LOOPBACK,
    WAIT,
    Leg,
    frame_body,
    frame_type,
    hostile_server,
    server_tls,
)
from tests.netutil import running_offer

DIGITS = 6


def six_digit_hmac_secret(digits: str) -> Secret:
    """What ``parse_secret`` would never produce: an hmac-mode key of six digits."""
    return Secret(mode=Mode.HMAC, value=digits.encode("ascii"), display=digits,
                  bits=DIGITS * math.log2(10))


@dataclass(frozen=True, kw_only=True)
class Recovery:
    key: bytes | None
    tried: int
    seconds: float


def recover_key(m1: bytes, cert_joiner: bytes, cert_offerer: bytes) -> Recovery:
    """Try every 6-digit K against a captured m1, in order, with cryptography's HMAC."""
    message = hmac_proof.REQUEST_LABEL + cert_joiner + cert_offerer
    start = time.perf_counter()
    for n in range(10**DIGITS):
        key = b"%06d" % n
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(message)
        if mac.finalize() == m1:
            return Recovery(key=key, tried=n + 1, seconds=time.perf_counter() - start)
    return Recovery(key=None, tried=10**DIGITS, seconds=time.perf_counter() - start)


async def test_offline_guessing_recovers_a_six_digit_hmac_key_and_pairs_mallory_with_both(
    make_device: MakeDevice, tmp_path: Path
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    mallory, mallory_store = make_device("mallory")
    weak = six_digit_hmac_secret(f"{secrets.randbelow(10**DIGITS):06d}")
    recoveries: list[Recovery] = []

    async def pose_as_alpha(leg: Leg) -> None:
        request = await leg.read_frame()
        assert request is not None and frame_type(request) == FrameType.HMAC_REQUEST
        ch = leg.channel
        m1 = frame_body(request)[:32]
        found = await asyncio.to_thread(recover_key, m1, ch.cert_joiner, ch.cert_offerer)
        recoveries.append(found)
        assert found.key is not None
        m2 = hmac_proof.compute(found.key, hmac_proof.RESPONSE_LABEL, ch.cert_joiner,
                                ch.cert_offerer)
        # She also borrows alpha's name: beta has nothing else to go by.
        await leg.send_frame(encode_frame(FrameType.HMAC_RESPONSE, m2 + b"alpha"))
        await leg.read_until_closed()

    async with running_offer(alpha, alpha_store, Mode.HMAC, secret=weak) as offer:
        # beta types the key alpha shows, but its connection reaches mallory.
        async with hostile_server(server_tls(mallory), pose_as_alpha) as fake_alpha:
            trusted_by_beta = await run_join(identity=beta, store=beta_store, host=LOOPBACK,
                                             port=fake_alpha.port, secret=weak, timeout=60)
        recovered = recoveries[0].key
        assert recovered is not None
        # Then mallory joins the real alpha with the key she recovered.
        await run_join(identity=mallory, store=mallory_store, host=LOOPBACK,
                       port=offer.listening.port,
                       secret=six_digit_hmac_secret(recovered.decode("ascii")))
        trusted_by_alpha = await asyncio.wait_for(offer.task, WAIT)

    assert recovered == weak.value
    assert trusted_by_beta.fingerprint == mallory.fingerprint
    assert trusted_by_beta.name == "alpha"
    assert trusted_by_alpha.fingerprint == mallory.fingerprint
    assert [p.fingerprint for p in beta_store.peers()] == [mallory.fingerprint]
    assert [p.fingerprint for p in alpha_store.peers()] == [mallory.fingerprint]

    run = recoveries[0]
    rate = run.tried / run.seconds
    report = {
        "attack": "offline guess of a 6-digit hmac-mode key from one captured m1",
        "key_space": 10**DIGITS,
        "keys_tried": run.tried,
        "seconds": round(run.seconds, 3),
        "keys_per_second": round(rate),
        "full_space_seconds_at_this_rate": round(10**DIGITS / rate, 3),
        "m1_message_bytes": len(hmac_proof.REQUEST_LABEL) + len(beta.cert_der)
        + len(mallory.cert_der),
        "implementation": "cryptography HMAC-SHA256, one CPU core, plain Python loop",
    }
    (tmp_path / "offline_guess.json").write_text(json.dumps(report, indent=2))
    print("\noffline guess:", json.dumps(report))
