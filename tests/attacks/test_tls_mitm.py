"""Attacks at the TLS level: mallory terminates TLS, relays, replays, guesses, races, stalls.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from OpenSSL import SSL

from certpair.codes import (
    Mode,
    Secret,
    generate_code,
    generate_hmac_key,
    parse_secret,
)
from certpair.errors import CertpairError, NetworkError, PairingFailed
from certpair.identity import Identity
from certpair.net.pairing import (
    MAX_CODES,
    Listening,
    OfferEvent,
    ProofRejected,
    run_join,
    run_offer,
)
from certpair.protocol import hmac_proof
from certpair.protocol.events import Paired
from certpair.protocol.frames import FrameType
from certpair.protocol.session import JoinerSession
from certpair.store import Peer, TrustStore, open_store
from certpair.tls import PairingTLS, TLSFailure
from tests.attacks.mitm import (
    LOOPBACK,
    WAIT,
    Delay,
    Direction,
    Drop,
    ForgedTLS,
    Leg,
    Policy,
    Reorder,
    Replay,
    Substitute,
    Tamper,
    client_tls,
    connect_leg,
    frame_body,
    frame_type,
    hostile_server,
    man_in_the_middle,
    raw_frame,
    record_honest_join,
    server_tls,
)
from tests.netutil import running_offer

Device = tuple[Identity, TrustStore]
MakeDevice = Callable[[str], Device]

MODES = pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC], ids=["cpace", "hmac"])
PROOF = {Mode.CPACE: FrameType.CPACE_SHARE_A, Mode.HMAC: FrameType.HMAC_REQUEST}
ANSWER = {Mode.CPACE: FrameType.CPACE_SHARE_B, Mode.HMAC: FrameType.HMAC_RESPONSE}


def fresh_secret(mode: Mode) -> Secret:
    """A cpace code, or an hmac key of the default (full) length."""
    return generate_code() if mode is Mode.CPACE else generate_hmac_key()


def wrong_secret(secret: Secret) -> Secret:
    """A well-formed secret of the same mode that is not ``secret``."""
    while True:
        other = fresh_secret(secret.mode)
        if other.value != secret.value:
            return other


def failures(store: TrustStore) -> list[str]:
    return [e.reason for e in store.events() if e.outcome == "failed"]


def assert_nobody_trusted(*stores: TrustStore) -> None:
    for store in stores:
        assert store.peers() == []


def flip_last_bit(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 1])


async def join(device: Device, port: int, secret: Secret, timeout: float = WAIT) -> Peer:
    identity, store = device
    return await run_join(identity=identity, store=store, host=LOOPBACK, port=port,
                          secret=secret, timeout=timeout)


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
    assert "pairing failed" in failures(alpha[1])
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
    assert peer.fingerprint == alpha[0].fingerprint
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
        assert failures(store) == ["pairing failed"]
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


# -- 7. online guessing -------------------------------------------------------------------


@MODES
async def test_the_right_secret_is_refused_once_its_failure_budget_is_spent(
    make_device: MakeDevice, mode: Mode
) -> None:
    alpha, mallory = make_device("alpha"), make_device("mallory")
    budget = {Mode.CPACE: 1, Mode.HMAC: 3}[mode]
    async with running_offer(*alpha, mode) as offer:
        secret = parse_secret(offer.listening.code)
        for _ in range(budget):
            with pytest.raises(PairingFailed):
                await join(mallory, offer.listening.port, wrong_secret(secret))
        # Mallory now learns (or guesses) the real secret: too late, it is burned.
        with pytest.raises((PairingFailed, NetworkError)):
            await join(mallory, offer.listening.port, secret)
    assert_nobody_trusted(alpha[1], mallory[1])


async def guess_once(mallory: Identity, port: int, guess: Secret,
                     timeline: list[object]) -> str:
    """One online guess over a fresh connection; says how the offerer answered."""
    try:
        leg = await connect_leg(client_tls(mallory), port)
    except OSError:
        return "unreachable"
    try:
        session = JoinerSession(secret=guess, channel=leg.channel, name="mallory",
                                scalar=secrets.token_bytes(32))
        session.start()
        await leg.send_frame(session.data_to_send())
        answer = await leg.read_frame()
        if answer is None:
            return "closed"
        if frame_type(answer) == FrameType.CPACE_SHARE_B:
            timeline.append("checked")  # the offerer used its code on this guess
            session.receive_data(answer)  # mallory checks Tb against her guess...
            await leg.send_frame(session.data_to_send())  # ...and reports the failure
            return "checked"
        if frame_type(answer) == FrameType.ERROR:
            return f"error {frame_body(answer)[0]}"
        return f"frame {frame_type(answer):#x}"
    finally:
        await leg.close()


@contextlib.asynccontextmanager
async def offer_with_timeline(
    device: Device, mode: Mode, timeline: list[object]
) -> AsyncIterator[tuple[asyncio.Task[Peer], int]]:
    first = asyncio.Event()
    ports: list[int] = []

    def on_event(event: OfferEvent) -> None:
        timeline.append(event)
        if isinstance(event, Listening):
            ports.append(event.port)
            first.set()

    task = asyncio.ensure_future(run_offer(identity=device[0], store=device[1], mode=mode,
                                           host=LOOPBACK, port=0, on_event=on_event))
    await asyncio.wait_for(first.wait(), WAIT)
    try:
        yield task, ports[0]
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@MODES
@pytest.mark.parametrize("burst", [1, 4], ids=["sequential", "bursts_of_4"])
async def test_many_online_guesses_get_one_check_per_secret_and_few_secrets(
    make_device: MakeDevice, mode: Mode, burst: int
) -> None:
    alpha = make_device("alpha")
    mallory, _ = make_device("mallory")
    timeline: list[object] = []
    outcomes: list[str] = []
    async with offer_with_timeline(alpha, mode, timeline) as (task, port):
        # At most 60 connections; the offerer should stop answering well before that.
        for _ in range(60 // burst):
            outcomes += await asyncio.gather(*(
                guess_once(mallory, port, fresh_secret(mode), timeline) for _ in range(burst)))
            if "unreachable" in outcomes:
                break
        with pytest.raises(PairingFailed):
            await asyncio.wait_for(task, WAIT)
    issued = [e for e in timeline if isinstance(e, Listening)]
    rejected = [e for e in timeline if isinstance(e, ProofRejected)]
    assert alpha[1].peers() == []
    assert "unreachable" in outcomes  # the run stopped issuing secrets
    if mode is Mode.HMAC:
        # One key, three checked guesses, then the run ends.
        assert len(issued) == 1
        assert [r.attempts_left for r in rejected][:3] == [2, 1, 0]
        assert all(r.burned for r in rejected[2:])
        return
    assert 1 < len(issued) <= MAX_CODES
    checked_per_code: list[int] = []
    for entry in timeline:
        if isinstance(entry, Listening):
            checked_per_code.append(0)
        elif entry == "checked":
            checked_per_code[-1] += 1
    assert max(checked_per_code) == 1, checked_per_code
    assert outcomes.count("checked") <= MAX_CODES


# -- 8. two joiners racing for one secret -----------------------------------------------


@MODES
@pytest.mark.parametrize("round_", range(3))
async def test_joiners_racing_for_one_secret_pair_exactly_one(
    make_device: MakeDevice, mode: Mode, round_: int
) -> None:
    alpha = make_device("alpha")
    joiners = [make_device(f"joiner{i}") for i in range(4)]
    async with running_offer(*alpha, mode) as offer:
        secret = parse_secret(offer.listening.code)
        results = await asyncio.gather(*(join(j, offer.listening.port, secret) for j in joiners),
                                       return_exceptions=True)
        offered = await asyncio.wait_for(offer.task, WAIT)
    winners = [(j, r) for j, r in zip(joiners, results, strict=True) if isinstance(r, Peer)]
    assert len(winners) == 1, results
    (winner_id, winner_store), peer = winners[0]
    assert all(isinstance(r, Peer | CertpairError) for r in results), results
    assert peer.fingerprint == alpha[0].fingerprint
    assert offered.fingerprint == winner_id.fingerprint
    assert [p.fingerprint for p in alpha[1].peers()] == [winner_id.fingerprint]
    assert_nobody_trusted(*(store for _, store in joiners if store is not winner_store))


# -- 10. slowloris ------------------------------------------------------------------------


@MODES
async def test_connections_trickling_a_client_hello_do_not_stop_a_real_joiner(
    make_device: MakeDevice, mode: Mode
) -> None:
    alpha, beta, (mallory, _) = make_device("alpha"), make_device("beta"), make_device("mallory")
    hello_engine = PairingTLS(mallory, server_side=False)
    hello_engine.do_handshake()
    hello = hello_engine.bytes_to_send()
    count = 6
    sent = [0] * count
    started, stop = asyncio.Event(), asyncio.Event()

    async def trickle(i: int) -> None:
        _, writer = await asyncio.open_connection(LOOPBACK, offer.listening.port)
        try:
            for byte in hello[:-1]:  # never the whole ClientHello
                if stop.is_set():
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                sent[i] += 1
                if all(sent):
                    started.set()
                with contextlib.suppress(TimeoutError):  # the attacker's pace: 100 bytes/s
                    await asyncio.wait_for(stop.wait(), 0.01)
        finally:
            writer.close()

    async with running_offer(*alpha, mode) as offer:
        tricklers = [asyncio.ensure_future(trickle(i)) for i in range(count)]
        await asyncio.wait_for(started.wait(), WAIT)
        peer = await join(beta, offer.listening.port, parse_secret(offer.listening.code),
                          timeout=5)
        still_trickling = [not t.done() for t in tricklers]
        progress = list(sent)
        stop.set()
        await asyncio.gather(*tricklers, return_exceptions=True)
    assert peer.fingerprint == alpha[0].fingerprint
    assert all(still_trickling) and all(0 < n < len(hello) - 1 for n in progress)
    assert [p.fingerprint for p in alpha[1].peers()] == [beta[0].fingerprint]


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

