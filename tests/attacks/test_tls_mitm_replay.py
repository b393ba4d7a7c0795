"""Attacks at the TLS level: proofs recorded in one session and played back in another.

Every scenario runs in cpace mode and in hmac mode with a full-length (80-bit) key,
between real ``run_offer`` / ``run_join`` drivers over loopback TLS, and asserts that
the replay fails: the victim's store trusts nobody, and it logged a failure.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from certpair.codes import Mode, Secret
from certpair.errors import NetworkError, PairingFailed
from certpair.identity import Identity
from certpair.protocol.events import Paired
from certpair.protocol.frames import FrameType
from certpair.store import open_store
from tests.attacks.honest import (
    ANSWER,
    MODES,
    PROOF,
    MakeDevice,
    assert_nobody_trusted,
    burned,
    failures,
    fresh_secret,
    join,
    record_honest_join,
)
from tests.attacks.mitm import WAIT, Leg, client_tls, connect_leg, hostile_server, server_tls
from tests.attacks.policies import Direction, frame_body, frame_type, raw_frame
from tests.netutil import running_offer

# -- 3. replays ---------------------------------------------------------------------------


async def capture_joiner_proof(make_device: MakeDevice, mallory: Identity, mode: Mode,
                               secret: Secret, source: str) -> list[bytes]:
    """What mallory has to replay to the offerer: the joiner's frames.

    ``impersonation``: beta was lured to mallory's server and sent its proof there.
    ``leaked``: the plaintext of a genuine alpha-beta pairing with the same secret
    (beyond any real attacker: TLS hides it; it makes the test stronger).
    """
    beta = make_device("beta")
    if source == "impersonation":
        async def keep_proof(leg: Leg) -> None:
            await leg.read_frame()  # then hang up

        async with hostile_server(server_tls(mallory), keep_proof) as srv:
            with pytest.raises(NetworkError):
                await join(beta, srv.port, secret)
            leg = await srv.next_finished()
        assert leg is not None
        return leg.received
    async with running_offer(*make_device("alpha-first-run"), mode, secret=secret) as offer:
        recording = await record_honest_join(beta[0], offer.listening.port, secret)
        await asyncio.wait_for(offer.task, WAIT)
    assert isinstance(recording.event, Paired)
    return recording.frames(Direction.TO_OFFERER)


@MODES
@pytest.mark.parametrize("source", ["impersonation", "leaked"])
async def test_replayed_joiner_proof_does_not_pair_in_a_new_session(
    make_device: MakeDevice, tmp_path: Path, mode: Mode, source: str
) -> None:
    alpha_id, _ = make_device("alpha")
    mallory, _ = make_device("mallory")
    secret = fresh_secret(mode)
    recorded = await capture_joiner_proof(make_device, mallory, mode, secret, source)
    assert frame_type(recorded[0]) == PROOF[mode]
    # alpha offers the very same secret again, with a fresh store.
    (tmp_path / "alpha-again").mkdir()
    with open_store(tmp_path / "alpha-again") as store:
        async with running_offer(alpha_id, store, mode, once=True, secret=secret) as offer:
            leg = await connect_leg(client_tls(mallory), offer.listening.port)
            answers: list[bytes | None] = []
            # m1; or Ya and then Ta. Lacking a Ta, mallory makes one up.
            if mode is Mode.CPACE and len(recorded) == 1:
                recorded.append(raw_frame(FrameType.CPACE_CONFIRM_A, secrets.token_bytes(64)))
            for frame in recorded:
                await leg.send_frame(frame)
                answers.append(await leg.read_frame())
                if answers[-1] is None or frame_type(answers[-1]) == FrameType.ERROR:
                    break
            await leg.close()
            with pytest.raises(PairingFailed):
                await asyncio.wait_for(offer.task, WAIT)
        assert store.peers() == []
        assert burned(store) == failures(store) and len(failures(store)) == 1
    last = answers[-1]
    assert last is not None and frame_type(last) == FrameType.ERROR


@pytest.mark.parametrize(("mode", "source"), [
    (Mode.CPACE, "leaked"), (Mode.HMAC, "leaked"), (Mode.HMAC, "reflected"),
])
async def test_replayed_offerer_proof_does_not_pair_in_a_new_session(
    make_device: MakeDevice, mode: Mode, source: str
) -> None:
    beta = make_device("beta")
    mallory, _ = make_device("mallory")
    secret = fresh_secret(mode)
    recorded: bytes | None = None
    if source == "leaked":  # m2 or Yb || Tb of a genuine session with this secret
        alpha_id, alpha_store = make_device("alpha")
        async with running_offer(alpha_id, alpha_store, mode, secret=secret) as offer:
            recording = await record_honest_join(make_device("beta-first-run")[0],
                                                 offer.listening.port, secret)
        recorded = recording.frames(Direction.TO_JOINER)[0]
        assert frame_type(recorded) == ANSWER[mode]

    async def answer(leg: Leg) -> None:
        proof = await leg.read_frame()
        assert proof is not None
        # "request" played back as "response": the joiner's own m1 as m2.
        reply = recorded or raw_frame(FrameType.HMAC_RESPONSE, frame_body(proof)[:32] + b"alpha")
        await leg.send_frame(reply)
        await leg.read_until_closed()

    async with hostile_server(server_tls(mallory), answer) as srv:
        with pytest.raises(PairingFailed):
            await join(beta, srv.port, secret)
    assert_nobody_trusted(beta[1])
    assert failures(beta[1]) == ["pairing failed"]
