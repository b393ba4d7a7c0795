"""The asyncio drivers over real loopback TLS: pairing, failures, hostile connections."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest

from certpair.codes import Mode, parse_secret
from certpair.errors import Expired, LocalStateError, NetworkError, PairingFailed
from certpair.identity import Identity
from certpair.net import PeerPaired, ProofRejected, run_join
from certpair.net.conversation import Conversation
from certpair.protocol.frames import FrameType, encode_frame
from certpair.store import TrustStore
from certpair.tls import PairingTLS
from tests.netutil import running_offer

Device = tuple[Identity, TrustStore]
MakeDevice = Callable[[str], Device]


def _wrong_code(code: str) -> str:
    digits = code.replace("-", "")[:-1]
    wrong = str((int(digits[0]) + 1) % 10) + digits[1:]
    from certpair.codes import damm_check_digit

    return wrong + str(damm_check_digit(wrong))


@pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC])
async def test_two_devices_pair_and_trust_exactly_each_other(
    make_device: MakeDevice, mode: Mode
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with running_offer(alpha, alpha_store, mode) as offer:
        peer = await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                              port=offer.listening.port, secret=parse_secret(offer.listening.code))
        offered = await asyncio.wait_for(offer.task, 10)
    assert peer.fingerprint == alpha.fingerprint and peer.name == "alpha"
    assert offered.fingerprint == beta.fingerprint and offered.name == "beta"
    assert [p.fingerprint for p in alpha_store.peers()] == [beta.fingerprint]
    assert [p.fingerprint for p in beta_store.peers()] == [alpha.fingerprint]
    assert {p.mode for p in alpha_store.peers() + beta_store.peers()} == {mode.value}


async def test_wrong_cpace_code_fails_both_sides_and_burns_code(make_device: MakeDevice) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with running_offer(alpha, alpha_store, once=True) as offer:
        code = offer.listening.code
        with pytest.raises(PairingFailed):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                           port=offer.listening.port, secret=parse_secret(_wrong_code(code)))
        with pytest.raises(PairingFailed):
            await asyncio.wait_for(offer.task, 10)
    assert alpha_store.peers() == [] and beta_store.peers() == []
    reasons = [e.reason for e in alpha_store.events() if e.outcome == "failed"]
    assert reasons == ["wrong code (or a tampered connection); the code is burned"]


async def test_burned_code_is_replaced_and_old_code_no_longer_pairs(
    make_device: MakeDevice,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with running_offer(alpha, alpha_store) as offer:
        port, code = offer.listening.port, offer.listening.code
        with pytest.raises(PairingFailed):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                           secret=parse_secret(_wrong_code(code)))
        rejected = await offer.next_event()
        assert isinstance(rejected, ProofRejected) and rejected.burned
        fresh = await offer.next_listening()
        assert fresh.code != code
        with pytest.raises(PairingFailed):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                           secret=parse_secret(code))
        # That was a wrong guess against the fresh code, which burned it too.
        fresher = await offer.next_listening()
        peer = await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                              secret=parse_secret(fresher.code))
    assert peer.fingerprint == alpha.fingerprint


async def test_hmac_key_burns_after_three_wrong_proofs(make_device: MakeDevice) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    wrong = parse_secret("0" * 15 + "0")  # an hmac-shaped key: check char of zeros is 0
    async with running_offer(alpha, alpha_store, Mode.HMAC) as offer:
        for left in (2, 1, 0):
            with pytest.raises(PairingFailed):
                await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                               port=offer.listening.port, secret=wrong)
            event = await offer.next_event()
            assert isinstance(event, ProofRejected) and event.attempts_left == left
        with pytest.raises(PairingFailed):
            await asyncio.wait_for(offer.task, 10)
        with pytest.raises((NetworkError, PairingFailed)):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                           port=offer.listening.port, secret=parse_secret(offer.listening.code))
    assert alpha_store.peers() == [] and beta_store.peers() == []


async def test_used_code_cannot_pair_a_second_device(make_device: MakeDevice) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    gamma, gamma_store = make_device("gamma")
    async with running_offer(alpha, alpha_store) as offer:
        secret = parse_secret(offer.listening.code)
        await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                       port=offer.listening.port, secret=secret)
        await asyncio.wait_for(offer.task, 10)
        with pytest.raises(NetworkError):
            await run_join(identity=gamma, store=gamma_store, host="127.0.0.1",
                           port=offer.listening.port, secret=secret, timeout=5)
    assert [p.name for p in alpha_store.peers()] == ["beta"]
    assert gamma_store.peers() == []


async def test_offer_expires_unused(make_device: MakeDevice) -> None:
    alpha, alpha_store = make_device("alpha")
    async with running_offer(alpha, alpha_store, ttl=0.3) as offer:
        with pytest.raises(Expired):
            await asyncio.wait_for(offer.task, 10)


async def test_joiner_arriving_after_expiry_gets_expired(make_device: MakeDevice) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    now = [1000.0]
    async with running_offer(alpha, alpha_store, ttl=60, clock=lambda: now[0]) as offer:
        now[0] += 61  # the offerer's clock passes the code's expiry
        with pytest.raises(Expired):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                           port=offer.listening.port, secret=parse_secret(offer.listening.code))
    assert beta_store.peers() == [] and alpha_store.peers() == []


async def test_joiner_with_nobody_listening_gets_network_error(make_device: MakeDevice) -> None:
    beta, beta_store = make_device("beta")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(NetworkError):
        await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                       secret=parse_secret("1234-5678-6"))


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _tls_client(identity: Identity, port: int) -> Conversation:
    reader, writer = await _raw(port)
    conv = Conversation(reader, writer, PairingTLS(identity, server_side=False))
    await conv.handshake()
    return conv


async def _closed_by_peer(conv: Conversation) -> bool:
    """Read until EOF; true if the server closed the connection."""
    try:
        while True:
            data = await asyncio.wait_for(conv.reader.read(4096), 15)
            if not data:
                return True
    except (ConnectionError, TimeoutError):
        return False


HOSTILE_PAYLOADS = {
    "oversized_length": bytes([1, FrameType.CPACE_SHARE_A, 0xFF, 0xFF]),
    "wrong_version": bytes([2, FrameType.CPACE_SHARE_A, 0, 33]) + b"\0" * 33,
    "unknown_type": bytes([1, 0x55, 0, 1, 0]),
    "zero_length": bytes([1, FrameType.CPACE_SHARE_A, 0, 0]),
    "out_of_order_confirm": encode_frame(FrameType.CPACE_CONFIRM_A, b"\0" * 64),
}


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS.values(), ids=HOSTILE_PAYLOADS.keys())
async def test_malformed_frames_are_closed_and_offerer_still_serves(
    make_device: MakeDevice, payload: bytes
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    mallory, _ = make_device("mallory")
    async with running_offer(alpha, alpha_store) as offer:
        conv = await _tls_client(mallory, offer.listening.port)
        await conv.send(payload)
        assert await _closed_by_peer(conv)
        conv.close()
        peer = await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                              port=offer.listening.port, secret=parse_secret(offer.listening.code))
        await asyncio.wait_for(offer.task, 10)  # the offerer commits after the joiner
    assert peer.fingerprint == alpha.fingerprint
    assert [p.name for p in alpha_store.peers()] == ["beta"]


async def test_garbage_and_silence_do_not_delay_a_legitimate_joiner(
    make_device: MakeDevice,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with running_offer(alpha, alpha_store) as offer:
        port = offer.listening.port
        _, garbage = await _raw(port)
        garbage.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
        _, silent = await _raw(port)  # never speaks
        half_reader, half = await _raw(port)
        half.write(bytes.fromhex("160301"))  # a TLS record header, then nothing
        peer = await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                              secret=parse_secret(offer.listening.code), timeout=5)
        for writer in (garbage, silent, half):
            writer.close()
        del half_reader
    assert peer.fingerprint == alpha.fingerprint


async def test_tls12_client_is_refused(make_device: MakeDevice) -> None:
    alpha, alpha_store = make_device("alpha")
    async with running_offer(alpha, alpha_store) as offer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", offer.listening.port, ssl=ctx), 10
            )
    assert alpha_store.peers() == []


async def test_client_without_certificate_is_refused(make_device: MakeDevice) -> None:
    alpha, alpha_store = make_device("alpha")
    async with running_offer(alpha, alpha_store) as offer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        reader, writer = await asyncio.open_connection("127.0.0.1", offer.listening.port, ssl=ctx)
        writer.write(encode_frame(FrameType.CPACE_SHARE_A, b"\x09" * 32 + b"x"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            data = await asyncio.wait_for(reader.read(100), 10)
            if not data:
                raise ConnectionResetError
        writer.close()
    assert alpha_store.peers() == []


async def test_second_concurrent_proof_is_refused_busy(make_device: MakeDevice) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    mallory, _ = make_device("mallory")
    async with running_offer(alpha, alpha_store) as offer:
        port = offer.listening.port
        # Mallory sends a share and then sits on the claim without confirming.
        conv = await _tls_client(mallory, port)
        await conv.send(encode_frame(FrameType.CPACE_SHARE_A, b"\x09" * 32 + b"mallory"))
        await conv.receive()  # Yb || Tb arrives: the claim is held
        with pytest.raises(NetworkError, match="busy"):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1", port=port,
                           secret=parse_secret(offer.listening.code), timeout=5)
        conv.close()
        event = await offer.next_event()
        assert isinstance(event, ProofRejected) and event.burned
    assert alpha_store.peers() == []


async def test_paired_event_reaches_listener(make_device: MakeDevice) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with running_offer(alpha, alpha_store) as offer:
        await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                       port=offer.listening.port, secret=parse_secret(offer.listening.code))
        event = await offer.next_event()
    assert isinstance(event, PeerPaired) and event.peer.name == "beta"


async def test_offerer_whose_store_fails_ends_with_local_state_error(
    make_device: MakeDevice,
) -> None:
    (alpha, alpha_store), (beta, beta_store) = make_device("alpha"), make_device("beta")
    async with running_offer(alpha, alpha_store) as offer:
        alpha_store.close()  # the store becomes unusable while the code is shown
        # The offerer says so in the protocol: the joiner stores nothing (issue 11 1b).
        with pytest.raises(PairingFailed, match="offerer could not store"):
            await run_join(identity=beta, store=beta_store, host="127.0.0.1",
                           port=offer.listening.port, secret=parse_secret(offer.listening.code))
        with pytest.raises(LocalStateError, match="the joiner was told"):
            await asyncio.wait_for(offer.task, 10)
    assert beta_store.peers() == []
