"""Attacks at the TLS level on an offer's budget: online guessing, racing, slowloris.

Mallory guesses secrets online, several joiners race for one secret, and connections
trickle a ClientHello to tie the offerer up.

Every scenario runs in cpace mode and in hmac mode with a full-length (80-bit) key,
between real ``run_offer`` / ``run_join`` drivers over loopback TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest

from certpair.codes import Mode, Secret, parse_secret
from certpair.errors import CertpairError, NetworkError, PairingFailed
from certpair.identity import Identity
from certpair.net import MAX_CODES, Listening, OfferEvent, ProofRejected, run_offer
from certpair.protocol.frames import FrameType
from certpair.protocol.session import JoinerSession
from certpair.store import Peer
from certpair.tls import PairingTLS
from tests.attacks.honest import (
    MODES,
    Device,
    MakeDevice,
    assert_nobody_trusted,
    fresh_secret,
    join,
    wrong_secret,
)
from tests.attacks.mitm import LOOPBACK, WAIT, client_tls, connect_leg
from tests.attacks.policies import frame_body, frame_type
from tests.netutil import running_offer

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
