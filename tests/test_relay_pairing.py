"""Pairing through a transit relay, over real TLS: the real relay (twistd transitrelay)
for what an honest relay does, the tests' own hostile relay for what a bad one can do.

The pairing protocol is the same on both paths; these tests check the transport: the
meeting at the relay (a token made of the public nameplate only), direct first and the
relay as the fallback, and that neither a relay that dies nor one that lies produces a
silent one-sided outcome or a pairing with the wrong device.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpair.codes import Mode, Secret, generate_code, parse_secret, with_nameplate
from certpair.errors import PairingFailed, PairingUnconfirmed
from certpair.identity import Identity
from certpair.net import PeerPaired, RelayStatus, run_join
from certpair.relay import CONNECTING_SIDE, RelayAddress, pairing_token
from certpair.relay.race import Route
from certpair.store import TrustStore
from tests.cliutil import Proc, certpair_argv, run
from tests.netutil import RunningOffer, running_offer
from tests.relayutil import HostileRelay, RealRelay, real_relay

Device = tuple[Identity, TrustStore]
MakeDevice = Callable[[str], Device]


@pytest.fixture(scope="module")
def relay() -> Iterator[RealRelay]:
    with real_relay() as running:
        yield running


@contextlib.asynccontextmanager
async def offer_at(relay: RelayAddress, device: Device, mode: Mode = Mode.CPACE,
                   **kwargs: Any) -> AsyncIterator[RunningOffer]:
    """An offerer on loopback that also waits at ``relay``; entered once it waits there."""
    async with running_offer(*device, mode, relay=relay, **kwargs) as offer:
        while not isinstance(event := await offer.next_event(), RelayStatus) \
                or not event.waiting:
            pass
        yield offer


async def _paired_path(offer: RunningOffer) -> str:
    while not isinstance(event := await offer.next_event(), PeerPaired):
        pass
    return event.path


@pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC])
async def test_two_devices_pair_through_the_real_relay_in_both_modes(
    make_device: MakeDevice, relay: RealRelay, mode: Mode,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    routes: list[Route] = []
    async with offer_at(relay.address, (alpha, alpha_store), mode) as offer:
        secret = parse_secret(offer.listening.code)
        assert secret.nameplate == offer.listening.nameplate is not None
        peer = await run_join(identity=beta, store=beta_store, host=None, secret=secret,
                              relay=relay.address, timeout=10, on_route=routes.append)
        assert await _paired_path(offer) == "relay"
        offered = await asyncio.wait_for(offer.task, 10)
    assert [r.path for r in routes] == ["relay"]
    assert (peer.fingerprint, offered.fingerprint) == (alpha.fingerprint, beta.fingerprint)
    assert peer.confirmed and offered.confirmed
    assert [p.fingerprint for p in beta_store.peers()] == [alpha.fingerprint]


def test_the_meeting_token_is_made_of_the_nameplate_alone() -> None:
    """The relay's token must not be a function of the secret: two codes under one
    nameplate meet under one token, and the token changes with the nameplate only."""
    first, second = generate_code(), generate_code()
    assert first.value != second.value
    a, b = with_nameplate(first, "12340"), with_nameplate(second, "12340")
    assert a.nameplate == b.nameplate == "12340"
    assert pairing_token(a.nameplate) == pairing_token(b.nameplate)
    assert pairing_token("12340") != pairing_token("56786")
    assert parse_secret(a.display).value == first.value  # the nameplate is not the secret


async def test_direct_is_preferred_when_both_paths_work(
    make_device: MakeDevice, relay: RealRelay,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    routes: list[Route] = []
    async with offer_at(relay.address, (alpha, alpha_store)) as offer:
        await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                       port=offer.listening.port, secret=parse_secret(offer.listening.code),
                       relay=relay.address, timeout=10, on_route=routes.append)
        assert await _paired_path(offer) == "direct"
    assert [r.path for r in routes] == ["direct"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_failed_direct_attempt_goes_to_the_relay_at_once(
    make_device: MakeDevice, relay: RealRelay,
) -> None:
    """Connection refused on the direct address: the relay is tried without waiting
    out the delay (an hour here, far longer than the join's own timeout)."""
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    routes: list[Route] = []
    async with offer_at(relay.address, (alpha, alpha_store)) as offer:
        await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=_closed_port(),
                       secret=parse_secret(offer.listening.code), relay=relay.address,
                       relay_delay=3600, timeout=10, on_route=routes.append)
        assert await _paired_path(offer) == "relay"
    assert [r.path for r in routes] == ["relay"]


@contextlib.contextmanager
def _unanswered_port() -> Iterator[int]:
    """A port whose SYNs go unanswered: a listener with a full accept queue."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = []
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_direct_attempt_that_hangs_falls_back_to_the_relay_after_the_delay(
    make_device: MakeDevice, relay: RealRelay,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    routes: list[Route] = []
    async with offer_at(relay.address, (alpha, alpha_store)) as offer:
        with _unanswered_port() as port:
            await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                           secret=parse_secret(offer.listening.code), relay=relay.address,
                           relay_delay=0.3, timeout=10, on_route=routes.append)
        assert await _paired_path(offer) == "relay"
    assert [r.path for r in routes] == ["relay"]


def _forbidden_strings(*devices: Identity, secret: Secret) -> list[bytes]:
    """What a relay must never see: names, the code's digits, certificate subjects."""
    found = []
    for device in devices:
        found.append(device.name.encode())
        cert = x509.load_pem_x509_certificate(device.cert_path.read_bytes())
        found.append(cert.subject.public_bytes())
        found.append(cert.public_bytes(Encoding.DER))
    digits = secret.display.rsplit("+", 1)[-1].replace("-", "")
    found += [digits.encode(), digits[:-1].encode(), secret.value]
    return found


@pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC])
async def test_a_recording_relay_sees_no_name_no_code_and_no_certificate(
    make_device: MakeDevice, mode: Mode,
) -> None:
    hostile = HostileRelay()
    address = await hostile.start()
    alpha_dev, beta_dev = make_device("alpha-7c1e"), make_device("beta-93fd")
    try:
        async with offer_at(address, alpha_dev, mode) as offer:
            secret = parse_secret(offer.listening.code)
            await run_join(identity=beta_dev[0], store=beta_dev[1], host=None, secret=secret,
                           relay=address, timeout=10)
            await asyncio.wait_for(offer.task, 10)
    finally:
        await hostile.close()
    assert hostile.glued == 1 and len(hostile.capture) > 1000
    assert set(hostile.tokens) == {pairing_token(offer.listening.nameplate or "")}
    capture = bytes(hostile.capture)
    for forbidden in _forbidden_strings(alpha_dev[0], beta_dev[0], secret=secret):
        assert forbidden not in capture


@pytest.mark.parametrize("pinned", [False, True], ids=["typed-code", "uri-fingerprint"])
async def test_a_relay_that_glues_the_joiner_to_a_third_party_pairs_nobody(
    make_device: MakeDevice, pinned: bool,
) -> None:
    """The hostile relay sends the joiner to mallory (who waits at the same relay
    with a code of its own): the proof fails or the pinned fingerprint refuses it,
    nothing is stored anywhere, and the joiner's error says why."""
    alpha_dev, beta_dev, mallory_dev = (make_device(n) for n in ("alpha", "beta", "mallory"))
    tokens: dict[str, str] = {}
    hostile = HostileRelay(redirect=lambda token, side: tokens.get("mallory", token)
                           if side == CONNECTING_SIDE else token)
    address = await hostile.start()
    try:
        async with offer_at(address, alpha_dev, once=True) as offer, \
                offer_at(address, mallory_dev, once=True) as third:
            tokens["mallory"] = pairing_token(third.listening.nameplate or "")
            with pytest.raises(PairingFailed) as failed:
                await run_join(identity=beta_dev[0], store=beta_dev[1], host=None,
                               secret=parse_secret(offer.listening.code), relay=address,
                               timeout=10,
                               expected_fingerprint=alpha_dev[0].fingerprint if pinned else None)
            assert not offer.task.done()  # alpha never heard of it: its code is intact
    finally:
        await hostile.close()
    if pinned:
        assert "does not match the expected fingerprint" in str(failed.value)
    else:
        assert "wrong secret or tampered connection" in str(failed.value)
    assert hostile.glued == 1
    for _, store in (alpha_dev, beta_dev, mallory_dev):
        assert store.peers() == []


async def test_a_relay_that_dies_after_the_offerer_committed_leaves_both_unconfirmed_not_silent(
    make_device: MakeDevice, tmp_path: Path,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    with real_relay() as dying:
        commit = alpha_store.commit_pairing_result  # what the offerer commits with

        def commit_then_relay_dies(**kwargs: Any) -> Any:
            done = commit(**kwargs)
            dying.kill()  # before the offerer's word can reach the joiner
            return done

        alpha_store.commit_pairing_result = commit_then_relay_dies  # type: ignore[method-assign]
        async with offer_at(dying.address, (alpha, alpha_store)) as offer:
            with pytest.raises(PairingUnconfirmed) as joined:
                await run_join(identity=beta, store=beta_store, host=None,
                               secret=parse_secret(offer.listening.code),
                               relay=dying.address, timeout=10)
            with pytest.raises(PairingUnconfirmed) as offered:
                await asyncio.wait_for(offer.task, 10)
    # Each side says so, and how to settle it through the same relay.
    for error in (joined.value, offered.value):
        assert "unconfirmed" in str(error) and f"--relay {dying.arg}" in str(error)
    for store, other in ((alpha_store, beta), (beta_store, alpha)):
        [kept] = store.peers()
        assert (kept.fingerprint, kept.confirmed) == (other.fingerprint, False)

    # The commands the joiner's message names exist and settle it, run as written
    # (the relay back on its address): alpha's serve, then beta's ping through it.
    hint = str(joined.value)
    ping = shlex.split(re.findall(r"`(certpair ping [^`]+)`", hint)[0])
    serve = shlex.split(re.findall(r"`(certpair serve [^`]+)`", hint)[0])
    assert (ping[1:3], serve[1:3]) == (["ping", "--relay"], ["serve", "--relay"])
    with real_relay(port=dying.port), \
            _running(certpair_argv(tmp_path / "alpha", *serve[1:], "--json")) as server:
        while (event := server.next_event())["event"] != "relay":
            pass
        assert event["status"] == "waiting"
        pinged = await asyncio.to_thread(run, tmp_path / "beta", *ping[1:])
        assert pinged.returncode == 0, pinged.stderr
        assert "confirmed" in pinged.stdout
        while (event := server.next_event())["event"] != "connection":
            pass
    for store in (alpha_store, beta_store):
        assert [p.confirmed for p in store.peers()] == [True]


@contextlib.contextmanager
def _running(argv: list[str]) -> Iterator[Proc]:
    proc = Proc(argv)
    try:
        yield proc
    finally:
        proc.kill()


async def test_a_relay_that_dies_after_the_joiner_committed_leaves_the_offerer_unconfirmed(
    make_device: MakeDevice,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    with real_relay() as dying:
        commit = beta_store.commit_pairing

        def commit_then_relay_dies(**kwargs: Any) -> Any:
            peer = commit(**kwargs)
            dying.kill()  # before the joiner's COMMITTED can reach the offerer
            return peer

        beta_store.commit_pairing = commit_then_relay_dies  # type: ignore[method-assign]
        async with offer_at(dying.address, (alpha, alpha_store)) as offer:
            peer = await run_join(identity=beta, store=beta_store, host=None,
                                  secret=parse_secret(offer.listening.code),
                                  relay=dying.address, timeout=10)
            with pytest.raises(PairingUnconfirmed):
                await asyncio.wait_for(offer.task, 10)
    assert peer.fingerprint == alpha.fingerprint
    [kept] = alpha_store.peers()
    assert (kept.fingerprint, kept.confirmed) == (beta.fingerprint, False)


async def test_the_offerer_goes_back_to_a_relay_that_restarted_and_pairs_there(
    make_device: MakeDevice,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    first = RealRelay()
    port = first.port
    try:
        async with offer_at(first.address, (alpha, alpha_store)) as offer:
            first.kill()
            while not isinstance(event := await offer.next_event(), RelayStatus) \
                    or event.waiting:
                pass
            assert "closed the connection" in event.reason or "cannot reach" in event.reason
            with real_relay(port=port) as second:
                while not isinstance(event := await offer.next_event(), RelayStatus) \
                        or not event.waiting:
                    pass
                await run_join(identity=beta, store=beta_store, host=None,
                               secret=parse_secret(offer.listening.code),
                               relay=second.address, timeout=10)
                await asyncio.wait_for(offer.task, 10)
    finally:
        first.kill()
    assert [p.fingerprint for p in alpha_store.peers()] == [beta.fingerprint]


async def test_a_burned_code_is_replaced_with_a_new_nameplate_and_the_wait_follows_it(
    make_device: MakeDevice, relay: RealRelay,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with offer_at(relay.address, (alpha, alpha_store)) as offer:
        first = parse_secret(offer.listening.code)
        digits = first.display.rsplit("+", 1)[1].replace("-", "")[:-1]
        wrong_body = str((int(digits[0]) + 1) % 10) + digits[1:]
        from certpair.codes import damm_check_digit

        wrong = with_nameplate(parse_secret(wrong_body + str(damm_check_digit(wrong_body))),
                               first.nameplate or "")
        with pytest.raises(PairingFailed):
            await run_join(identity=beta, store=beta_store, host=None, secret=wrong,
                           relay=relay.address, timeout=10)
        renewed = await offer.next_listening()
        second = parse_secret(renewed.code)
        assert renewed.nameplate == second.nameplate is not None
        await run_join(identity=beta, store=beta_store, host=None, secret=second,
                       relay=relay.address, timeout=10)
        await asyncio.wait_for(offer.task, 10)
    assert [p.fingerprint for p in alpha_store.peers()] == [beta.fingerprint]
