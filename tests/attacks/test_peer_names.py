"""Peer names are chosen by the peer (issue 10 §1): they cannot hide or pose.

A name that is blank or holds an invisible format character (a bidi override that
reverses what is shown, a zero-width character that makes two names look alike) is a
protocol error when a peer sends it, and refused when naming oneself. A new device
whose name reads the same as an already-paired different device's is stored under a
distinguishable name, and the user is told.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certpair.codes import Mode, parse_secret
from certpair.errors import BadInput
from certpair.identity import create_identity
from certpair.names import check_name
from certpair.protocol import cpace
from certpair.protocol.events import FailureReason
from certpair.protocol.frames import FrameType, encode_frame
from certpair.protocol.machine import cpace_ci
from certpair.protocol.offer import OfferState
from certpair.store import open_store
from tests.attacks.honest import MODES, MakeDevice, join
from tests.cliutil import Offerer, run
from tests.helpers import (
    JOINER_SCALAR,
    failed_with,
    make_channel,
    make_joiner,
    make_offer,
    make_offerer,
    make_secret,
)
from tests.netutil import running_offer

HIDING = pytest.mark.parametrize(
    "name",
    [" ", "   \t", "\u00a0", "alpha\u202egnp.exe", "be\u200bta", "\ufeffbeta", "\u2066beta",
     "beta\u200d", "\u061cbeta"],
    ids=["space", "blank", "nbsp", "rlo", "zwsp", "bom", "lri", "zwj", "alm"],
)


def _proof_frame(mode: Mode, raw_name: bytes) -> bytes:
    """The joiner's first frame, honestly computed, carrying ``raw_name``."""
    secret, channel = make_secret(mode), make_channel()
    if mode is Mode.HMAC:
        return encode_frame(FrameType.HMAC_REQUEST, b"\x00" * 32 + raw_name)
    g = cpace.calculate_generator(secret.value, cpace_ci(channel), channel.exporter)
    return encode_frame(FrameType.CPACE_SHARE_A, cpace.public_share(JOINER_SCALAR, g) + raw_name)


@MODES
@HIDING
def test_offerer_refuses_a_hiding_joiner_name_before_claiming_the_offer(
    mode: Mode, name: str
) -> None:
    offer = make_offer(make_secret(mode))
    offerer = make_offerer(offer)
    events = offerer.receive_data(_proof_frame(mode, name.encode()), now=0.0)
    assert events == failed_with(FailureReason.PROTOCOL_ERROR)
    assert (offer.state, offer.failures) == (OfferState.OPEN, 0)


@HIDING
def test_joiner_refuses_a_hiding_offerer_name(name: str) -> None:
    secret = make_secret(Mode.CPACE)
    joiner = make_joiner(secret)
    joiner.start()
    body = b"\x09" * 32 + b"\x00" * 64 + name.encode()
    events = joiner.receive_data(encode_frame(FrameType.CPACE_SHARE_B, body))
    assert events == failed_with(FailureReason.PROTOCOL_ERROR)


@HIDING
def test_a_device_cannot_name_itself_with_a_hiding_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInput):
        create_identity(tmp_path, name)
    result = run(tmp_path / "cli", "init", "--name", name)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_ordinary_names_still_pass() -> None:
    for name in ("beta", "Küche", "東京の部屋", "laptop (work)", "a b", "emoji 🐧"):
        assert check_name(name) == name


@MODES
async def test_a_second_device_with_a_taken_name_is_stored_distinguishably(
    make_device: MakeDevice, tmp_path: Path, mode: Mode
) -> None:
    alpha = make_device("alpha")
    first = make_device("beta")
    second_identity = create_identity(tmp_path / "beta-2", "Beta")  # reads the same
    with open_store(tmp_path / "beta-2") as second_store:
        for device in (first, (second_identity, second_store)):
            async with running_offer(*alpha, mode) as offer:
                await join(device, offer.listening.port, parse_secret(offer.listening.code))
                paired = await offer.task
    names = {p.fingerprint: p.name for p in alpha[1].peers()}
    assert names == {first[0].fingerprint: "beta", second_identity.fingerprint: "Beta (2)"}
    assert paired.given_name == "Beta" and paired.name == "Beta (2)"
    logged = next(e for e in alpha[1].events() if e.outcome == "paired")
    assert logged.peer_name == "Beta (2)" and "taken" in logged.reason


def test_the_cli_says_when_a_name_was_taken(homes: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = homes
    c = tmp_path / "c"
    assert run(c, "init", "--name", "beta").returncode == 0
    for joiner in (b, c):
        offerer = Offerer(a, "--no-advertise")
        result = run(joiner, "join", offerer.address, offerer.code)
        assert result.returncode == 0, result.stderr
        code, rest, err = offerer.finish()
        assert code == 0, err
    assert rest[0]["peer"] == {"name": "beta (2)", "fingerprint": rest[0]["peer"]["fingerprint"],
                               "given_name": "beta"}
    listed = run(a, "peers").stdout
    assert "beta (2)" in listed
