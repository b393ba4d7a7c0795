"""Every outcome is recorded, even when the last send fails (issue 10 §2).

A joiner that sends its proof (or a bogus Ta) and resets the connection at once makes
the offerer's answer fail to send. Before the fix the outcome was lost with that send:
no audit row, no ``failed`` line, a burned code left on screen until its TTL (the next
honest try then "failed" with a wrong secret), and in hmac mode an offer loop polling
every 50 ms forever. Here the connection is reset at every step of both flows, on each
side, and each honest side must record the attempt and move on.

The offerer's race needs the offerer to have processed the proof when the reset lands,
so that its answer is what fails: in cpace mode the bogus Ta follows a full round trip
(Yb, Tb), and Ta and the RST reach the offerer's kernel together.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from certpair.codes import Mode, Secret, parse_secret
from certpair.errors import CertpairError
from certpair.identity import Identity
from certpair.net import Listening, ProofRejected
from certpair.protocol.frames import FrameType
from certpair.protocol.session import JoinerSession
from tests.attacks.honest import MakeDevice, burned, failures, fresh_secret, join, wrong_secret
from tests.attacks.mitm import WAIT, Leg, hostile_server, server_tls
from tests.attacks.policies import raw_frame
from tests.attacks.resets import RawPeer
from tests.netutil import RunningOffer, running_offer


def _joiner(identity: Identity, peer: RawPeer, secret: Secret) -> JoinerSession:
    return JoinerSession(secret=secret, channel=peer.tls.channel(), name=identity.name,
                         scalar=secrets.token_bytes(32) if secret.mode is Mode.CPACE else None)


async def _first_frame(identity: Identity, port: int, secret: Secret) -> tuple[RawPeer, bytes]:
    peer = await RawPeer.connect(identity, port)
    session = _joiner(identity, peer, secret)
    session.start()
    return peer, session.data_to_send()


async def _spent(offer: RunningOffer) -> ProofRejected:
    """The offerer's next event, which must say that an attempt was spent."""
    event = await offer.next_event()
    assert isinstance(event, ProofRejected), event
    return event


async def test_cpace_a_bogus_ta_sent_with_a_reset_burns_the_code_and_is_logged_and_replaced(
    make_device: MakeDevice,
) -> None:
    alpha, beta, mallory = make_device("alpha"), make_device("beta"), make_device("mallory")
    async with running_offer(*alpha, Mode.CPACE) as offer:
        shown = parse_secret(offer.listening.code)
        peer, share = await _first_frame(mallory[0], offer.listening.port, wrong_secret(shown))
        await peer.send(share)
        answer = await peer.read_frame()
        assert answer is not None
        peer.reset(raw_frame(FrameType.CPACE_CONFIRM_A, secrets.token_bytes(64)))
        rejected = await _spent(offer)
        assert rejected.burned
        fresh = await offer.next_event()  # the burned code is replaced at once
        assert isinstance(fresh, Listening) and fresh.code != offer.listening.code
        await join(beta, fresh.port, parse_secret(fresh.code))
        await asyncio.wait_for(offer.task, WAIT)
    assert burned(alpha[1])


# -- the joiner's side: a hostile offerer resets at each step ---------------------------

Step = Callable[[Leg, Mode], Awaitable[None]]


def _reset(leg: Leg) -> None:
    sock = leg.conv.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    leg.conv.writer.transport.abort()


async def _after_handshake(leg: Leg, mode: Mode) -> None:
    _reset(leg)


async def _after_proof(leg: Leg, mode: Mode) -> None:
    await leg.read_frame()
    _reset(leg)


async def _with_bogus_answer(leg: Leg, mode: Mode) -> None:
    await leg.read_frame()
    if mode is Mode.CPACE:
        body = secrets.token_bytes(96) + b"mallory"
        await leg.send_frame(raw_frame(FrameType.CPACE_SHARE_B, body))
    else:
        await leg.send_frame(raw_frame(FrameType.HMAC_RESPONSE,
                                       secrets.token_bytes(32) + b"mallory"))
    _reset(leg)


@pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC], ids=["cpace", "hmac"])
@pytest.mark.parametrize("step", [_after_handshake, _after_proof, _with_bogus_answer],
                         ids=["after-handshake", "after-proof", "with-bogus-answer"])
async def test_joiner_records_a_reset_at_every_step(
    make_device: MakeDevice, mode: Mode, step: Step
) -> None:
    beta, mallory = make_device("beta"), make_device("mallory")

    async def offerer(leg: Leg) -> None:
        await step(leg, mode)

    async with hostile_server(server_tls(mallory[0]), offerer) as server:
        with pytest.raises(CertpairError):
            await join(beta, server.port, fresh_secret(mode))
    assert beta[1].peers() == []
    assert len(failures(beta[1])) == 1
