"""The honest side of the TLS-level attack scenarios, and the checks that it held.

Devices, secrets and joins as the scenarios use them, the frames a proof and its
answer travel in, and :func:`record_honest_join`: an honest joiner that also keeps its
transcript, for replays of a session whose plaintext leaked.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from certpair.codes import Mode, Secret, generate_code, generate_hmac_key
from certpair.identity import Identity
from certpair.net import run_join
from certpair.protocol.events import Confirmed, Failed, Paired, Unconfirmed
from certpair.protocol.frames import FrameType
from certpair.protocol.session import JoinerSession
from certpair.store import Peer, TrustStore
from tests.attacks.mitm import LOOPBACK, WAIT, client_tls, connect_leg
from tests.attacks.policies import Direction, FrameSplitter

__all__ = [
    "ANSWER",
    "MODES",
    "PROOF",
    "Device",
    "HonestRecording",
    "MakeDevice",
    "assert_nobody_trusted",
    "failures",
    "fresh_secret",
    "join",
    "record_honest_join",
    "wrong_secret",
]

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


def burned(store: TrustStore) -> list[str]:
    """The offerer's rows for failed proofs that burned the secret (log words, issue 24)."""
    return [r for r in failures(store) if r in {
        "wrong code (or a tampered connection); the code is burned",
        "wrong key (or a tampered connection); the key is burned"}]


def assert_nobody_trusted(*stores: TrustStore) -> None:
    for store in stores:
        assert store.peers() == []

async def join(device: Device, port: int, secret: Secret, timeout: float = WAIT) -> Peer:
    identity, store = device
    return await run_join(identity=identity, store=store, host=LOOPBACK, port=port,
                          secret=secret, timeout=timeout)


@dataclass(frozen=True, kw_only=True)
class HonestRecording:
    """An honest joiner's run with its transcript (as if its plaintext had leaked)."""

    event: Paired | Failed | Unconfirmed
    transcript: list[tuple[Direction, bytes]]

    def frames(self, direction: Direction) -> list[bytes]:
        """The frames one side sent."""
        return [frame for d, frame in self.transcript if d is direction]


async def record_honest_join(identity: Identity, port: int, secret: Secret) -> HonestRecording:
    """Run the honest joiner's state machine over a real TLS connection, keeping frames.

    Nothing here is adversarial: it is ``run_join`` without the store, so a test can
    replay a genuine session's messages elsewhere.
    """
    leg = await connect_leg(client_tls(identity), port)
    transcript: list[tuple[Direction, bytes]] = []
    session = JoinerSession(
        secret=secret, channel=leg.channel, name=identity.name,
        scalar=secrets.token_bytes(32) if secret.mode is Mode.CPACE else None,
    )
    splitter = FrameSplitter()

    async def flush() -> None:
        for frame in splitter.feed(session.data_to_send()):
            transcript.append((Direction.TO_OFFERER, frame))
            await leg.send_frame(frame)

    try:
        session.start()
        await flush()
        event: Paired | Failed | Unconfirmed | None = None
        while event is None:
            frame = await leg.read_frame()
            if frame is None:
                event = session.connection_lost()
                break
            transcript.append((Direction.TO_JOINER, frame))
            events = session.receive_data(frame)
            if events and isinstance(events[0], Paired):
                session.committed()  # like run_join after its commit: say so
            await flush()
            found = events[0] if events else None
            assert not isinstance(found, Confirmed | Unconfirmed)
            event = found
    finally:
        await leg.close()
    assert event is not None
    return HonestRecording(event=event, transcript=transcript)
