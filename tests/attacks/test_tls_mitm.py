"""Attacks at the TLS level: mallory terminates TLS, relays, tampers, forges, downgrades.

Every scenario runs in cpace mode and in hmac mode with a full-length (80-bit) key,
between real ``run_offer`` / ``run_join`` drivers over loopback TLS, and asserts that
the attack fails: neither honest store trusts anybody, and the victim logged a failure.

What mallory can and cannot do with certificates (scenario 2): she can present any
certificate whose private key she holds — her own, or any number of fresh ones — on
either leg. She cannot present an honest device's certificate: TLS 1.3 makes every
certificate owner sign the handshake transcript (CertificateVerify), so without the key
a forged client ends up sending no certificate at all and a forged server has none to
offer; OpenSSL refuses both, and the honest side's handshake fails before any proof
is sent. So a man in the middle always shows each honest device a certificate that
is not the other honest device's, and the proofs bind the certificates observed.

Replays are in ``test_tls_mitm_replay.py``; online guessing, racing joiners and
slowloris in ``test_online_guessing.py``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from OpenSSL import SSL

from certpair.codes import Mode, Secret, parse_secret
from certpair.errors import CertpairError, NetworkError, PairingFailed
from certpair.identity import Identity
from certpair.protocol import hmac_proof
from certpair.protocol.frames import FrameType
from certpair.tls import PairingTLS, TLSFailure
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
)
from tests.attacks.mitm import (
    LOOPBACK,
    WAIT,
    ForgedTLS,
    Leg,
    client_tls,
    hostile_server,
    man_in_the_middle,
    server_tls,
)
from tests.attacks.policies import (
    Delay,
    Direction,
    Drop,
    Policy,
    Reorder,
    Replay,
    Substitute,
    Tamper,
    frame_type,
    raw_frame,
)
from tests.netutil import running_offer


def flip_last_bit(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 1])



# -- 1. relaying, and every other thing a man in the middle can do to the frames --------


@MODES
async def test_mitm_relaying_every_frame_unchanged_makes_nobody_trust_anybody(
    make_device: MakeDevice, mode: Mode
) -> None:
    alpha, beta, (mallory, _) = make_device("alpha"), make_device("beta"), make_device("mallory")
    async with running_offer(*alpha, mode, once=True) as offer:
        async with man_in_the_middle(offerer_port=offer.listening.port,
                                     to_joiner=server_tls(mallory),
                                     to_offerer=client_tls(mallory)) as mitm:
            with pytest.raises(PairingFailed):
                await join(beta, mitm.port, parse_secret(offer.listening.code))
            icpt = await mitm.next_done()
        with pytest.raises(PairingFailed):
            await asyncio.wait_for(offer.task, WAIT)
    assert icpt is not None and icpt.offerer is not None
    # The relay carried the joiner's proof and the offerer's verdict, byte for byte...
    to_offerer, to_joiner = icpt.frames(Direction.TO_OFFERER), icpt.frames(Direction.TO_JOINER)
    assert frame_type(to_offerer[0]) == PROOF[mode]
    assert icpt.offerer.sent == to_offerer and icpt.joiner.sent == to_joiner
    # ...but each honest side observed mallory's certificate, and the proofs bind it.
    assert icpt.joiner.channel.cert_joiner == beta[0].cert_der
    assert icpt.offerer.channel.cert_offerer == alpha[0].cert_der
    assert_nobody_trusted(alpha[1], beta[1])
    assert burned(alpha[1])
    assert "pairing failed" in failures(beta[1])


async def test_tcp_relay_without_tls_termination_pairs_the_honest_devices_only(
    make_device: MakeDevice,
) -> None:
    # Control: a relay that cannot terminate TLS passes the pairing through untouched,
    # so the failures above come from terminating TLS, not from the relay plumbing.
    alpha, beta = make_device("alpha"), make_device("beta")

    async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, offer.listening.port)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer),
                             return_exceptions=True)

    async with running_offer(*alpha) as offer:
        relay = await asyncio.start_server(splice, LOOPBACK, 0)
        async with relay:
            peer = await join(beta, relay.sockets[0].getsockname()[1],
                              parse_secret(offer.listening.code))
            await asyncio.wait_for(offer.task, WAIT)
    assert peer.fingerprint == alpha[0].fingerprint
    assert [p.fingerprint for p in alpha[1].peers()] == [beta[0].fingerprint]


POLICIES: dict[str, Callable[[Mode], Policy]] = {
    "tamper_proof": lambda m: Tamper(flip_last_bit, Direction.TO_OFFERER, PROOF[m]),
    "tamper_answer": lambda m: Tamper(flip_last_bit, Direction.TO_JOINER, ANSWER[m]),
    "replay_proof_twice": lambda m: Replay(1, Direction.TO_OFFERER),
    "delay_every_frame": lambda m: Delay(0.2),
    "drop_proof": lambda m: Drop(Direction.TO_OFFERER, PROOF[m]),
    "drop_answer": lambda m: Drop(Direction.TO_JOINER),
    "reorder_towards_offerer": lambda m: Reorder(Direction.TO_OFFERER, 2),
    "answer_with_error_busy": lambda m: Substitute(
        [raw_frame(FrameType.ERROR, b"\x04")], Direction.TO_JOINER),
}


@MODES
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
async def test_no_mitm_policy_makes_anybody_trust_anybody(
    make_device: MakeDevice, mode: Mode, policy: Callable[[Mode], Policy]
) -> None:
    alpha, beta, (mallory, _) = make_device("alpha"), make_device("beta"), make_device("mallory")
    async with (
        running_offer(*alpha, mode, once=True) as offer,
        man_in_the_middle(offerer_port=offer.listening.port, to_joiner=server_tls(mallory),
                          to_offerer=client_tls(mallory), policy=policy(mode)) as mitm,
    ):
        # Stalling policies leave the joiner waiting: its own timeout ends the run.
        with pytest.raises(CertpairError):
            await join(beta, mitm.port, parse_secret(offer.listening.code), timeout=1.0)
        await mitm.next_done()
    assert_nobody_trusted(alpha[1], beta[1])
    assert failures(beta[1])


# -- 2. a certificate mallory has no key for --------------------------------------------


@MODES
@pytest.mark.parametrize("forged_leg", ["towards_joiner", "towards_offerer"])
async def test_mitm_cannot_show_an_honest_certificate_without_its_key(
    make_device: MakeDevice, mode: Mode, forged_leg: str
) -> None:
    alpha, beta, (mallory, _) = make_device("alpha"), make_device("beta"), make_device("mallory")
    to_joiner: Callable[[], PairingTLS]
    to_offerer: Callable[[], PairingTLS]
    if forged_leg == "towards_joiner":  # pose as alpha to beta; be mallory to alpha
        to_joiner = lambda: ForgedTLS(  # noqa: E731
            cert_der=alpha[0].cert_der, key=mallory.key, name="alpha", server_side=True)
        to_offerer = client_tls(mallory)
    else:  # be mallory to beta; pose as beta to alpha
        to_joiner = server_tls(mallory)
        to_offerer = lambda: ForgedTLS(  # noqa: E731
            cert_der=beta[0].cert_der, key=mallory.key, name="beta", server_side=False)
    async with running_offer(*alpha, mode, once=True) as offer:
        secret = parse_secret(offer.listening.code)
        async with man_in_the_middle(offerer_port=offer.listening.port, to_joiner=to_joiner,
                                     to_offerer=to_offerer) as mitm:
            with pytest.raises((NetworkError, PairingFailed)):
                await join(beta, mitm.port, secret, timeout=5)
            icpt = await mitm.next_done()
        if forged_leg == "towards_joiner":
            # beta's handshake failed: no proof ever left beta.
            assert icpt is None and len(mitm.server.handshake_failures) == 1
        else:
            # alpha refused the handshake: it saw no certificate it could bind.
            assert icpt is not None and icpt.offerer is not None
            assert icpt.frames(Direction.TO_JOINER) == []
            # alpha hung up without a frame; had its handshake completed, the lost
            # connection would have been logged as a failed pairing (it is not, below).
            assert isinstance(icpt.offerer.error, TLSFailure | OSError)
        assert_nobody_trusted(alpha[1], beta[1])
        # A refused handshake is no pairing attempt: it costs the code nothing (and
        # leaves no audit row), and the real joiner still pairs.
        assert alpha[1].events() == []
        peer = await join(beta, offer.listening.port, secret)
        offered = await asyncio.wait_for(offer.task, WAIT)  # the offerer commits last
    assert peer.fingerprint == alpha[0].fingerprint
    assert offered.fingerprint == beta[0].fingerprint
    assert [p.fingerprint for p in alpha[1].peers()] == [beta[0].fingerprint]


def test_pairing_tls_refuses_a_certificate_with_someone_elses_key(
    make_device: MakeDevice,
) -> None:
    (beta, _), (mallory, _) = make_device("beta"), make_device("mallory")
    forged = Identity(name="beta", key=mallory.key, cert_der=beta.cert_der,
                      cert_path=Path(), key_path=Path())
    for server_side in (True, False):
        with pytest.raises(SSL.Error):
            PairingTLS(forged, server_side=server_side)


# -- 5. downgrade by a hostile offerer --------------------------------------------------


def hmac_candidates(secret: Secret, beta: Identity, mallory: Identity) -> list[bytes]:
    """Every HMAC a downgraded joiner could compute over its code, as m1 or m2."""
    keys = {secret.value, secret.display.encode(), secret.display.replace("-", "").encode()}
    tags = []
    for key in keys:
        for label in (hmac_proof.REQUEST_LABEL, hmac_proof.RESPONSE_LABEL):
            for first, second in ((beta, mallory), (mallory, beta)):
                mac = hmac.HMAC(key, hashes.SHA256())
                mac.update(label + first.cert_der + second.cert_der)
                tags.append(mac.finalize())
    return tags


def downgrade_answer(kind: str, secret: Secret, channel_certs: tuple[bytes, bytes]) -> bytes:
    joiner_cert, offerer_cert = channel_certs
    if kind == "hmac_response_keyed_with_the_code":
        m2 = hmac_proof.compute(secret.value, hmac_proof.RESPONSE_LABEL, joiner_cert,
                                offerer_cert)
        return raw_frame(FrameType.HMAC_RESPONSE, m2 + b"alpha")
    if kind == "hmac_response_random":
        return raw_frame(FrameType.HMAC_RESPONSE, secrets.token_bytes(32) + b"alpha")
    if kind == "cpace_share_b":
        return raw_frame(FrameType.CPACE_SHARE_B, secrets.token_bytes(96) + b"alpha")
    assert kind == "error_mode_mismatch"
    return raw_frame(FrameType.ERROR, b"\x03")


@pytest.mark.parametrize(("mode", "kind"), [
    (Mode.CPACE, "hmac_response_keyed_with_the_code"),
    (Mode.CPACE, "hmac_response_random"),
    (Mode.CPACE, "error_mode_mismatch"),
    (Mode.HMAC, "cpace_share_b"),
    (Mode.HMAC, "error_mode_mismatch"),
])
async def test_hostile_offerer_cannot_switch_the_joiner_to_the_other_mode(
    make_device: MakeDevice, mode: Mode, kind: str
) -> None:
    beta = make_device("beta")
    mallory, _ = make_device("mallory")
    secret = fresh_secret(mode)

    async def downgrade(leg: Leg) -> None:
        proof = await leg.read_frame()
        assert proof is not None
        ch = leg.channel
        await leg.send_frame(downgrade_answer(kind, secret, (ch.cert_joiner, ch.cert_offerer)))
        await leg.read_until_closed()

    async with hostile_server(server_tls(mallory), downgrade) as srv:
        with pytest.raises(PairingFailed):
            await join(beta, srv.port, secret)
        leg = await srv.next_finished()
    assert leg is not None and srv.accepted == 1  # no second try in the other mode
    sent_types = [frame_type(f) for f in leg.received]
    assert sent_types[0] == PROOF[mode]
    assert sent_types[1:] in ([], [FrameType.ERROR])
    if mode is Mode.CPACE:
        everything = b"".join(leg.received)
        assert not any(tag in everything for tag in hmac_candidates(secret, beta[0], mallory))
    assert_nobody_trusted(beta[1])
    assert failures(beta[1])
