"""The certificate profile at pairing (issue 10 §1), between real drivers over real TLS.

A hostile device holds the private key of a certificate that could sign others, carries
a key certpair does not make, or poses under an already-paired device's names. TLS lets
it through (it completes CertificateVerify); certpair must refuse it on both sides right
after the handshake: before the joiner sends anything that depends on the secret, and
before the offerer claims its code, so the same code still pairs the honest device.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certpair.codes import Mode, parse_secret
from certpair.errors import PairingFailed
from certpair.identity import Identity
from certpair.net import JoinerRefused, run_join
from certpair.profile import CertificateRefused, ProfileRule
from certpair.protocol.events import Failed, FailureReason
from certpair.protocol.frames import FrameType
from certpair.protocol.offer import OfferState
from certpair.store import TrustStore
from tests.attacks.forged_certs import (
    forge_cert,
    forge_v1_cert,
    identity_with,
    key_usage,
    p256,
    write_identity,
)
from tests.attacks.honest import MODES, MakeDevice, failures, fresh_secret, join
from tests.attacks.mitm import LOOPBACK, Leg, hostile_server, server_tls
from tests.attacks.policies import frame_body, frame_type
from tests.cliutil import Offerer, events, init, peers, run
from tests.helpers import make_joiner, make_offer, make_offerer, make_secret
from tests.netutil import running_offer

Forge = Callable[[Identity], tuple[bytes, Any, ProfileRule]]


def _with(rule: ProfileRule, **kwargs: Any) -> Forge:
    def forge(victim: Identity) -> tuple[bytes, Any, ProfileRule]:
        del victim
        key = p256()
        return forge_cert(key, **kwargs), key, rule
    return forge


def _v1(victim: Identity) -> tuple[bytes, Any, ProfileRule]:
    del victim
    key = p256()
    return forge_v1_cert(key), key, ProfileRule.OLD_VERSION


def _p384(victim: Identity) -> tuple[bytes, Any, ProfileRule]:
    del victim
    key = ec.generate_private_key(ec.SECP384R1())
    return forge_cert(key), key, ProfileRule.KEY_TYPE


def _posing_as(victim: Identity) -> tuple[bytes, Any, ProfileRule]:
    """Issue 10 §1 (a): a CA:FALSE leaf whose SAN is a paired device's name."""
    san = x509.load_der_x509_certificate(victim.cert_der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    key = p256()
    return forge_cert(key, dns=san), key, ProfileRule.NAME_COLLISION


HOSTILE = pytest.mark.parametrize(
    "forge",
    [
        _with(ProfileRule.CA_TRUE, ca=True),
        _with(ProfileRule.KEY_CERT_SIGN, usage=key_usage(cert_sign=True)),
        _with(ProfileRule.CRL_SIGN, usage=key_usage(crl_sign=True)),
        _with(ProfileRule.NO_BASIC_CONSTRAINTS, ca=None),
        _v1,
        _p384,
        _posing_as,
    ],
    ids=["ca-true", "keycertsign", "crlsign", "no-basic-constraints", "v1", "p384",
         "posing-as-paired"],
)


def _pair_victim(store: TrustStore, victim: Identity) -> None:
    store.commit_pairing(name=victim.name, cert_der=victim.cert_der, mode="cpace",
                         role="offerer", remote="192.0.2.1:1")


@MODES
@HOSTILE
async def test_offerer_refuses_the_joiners_certificate_and_the_same_code_pairs_an_honest_joiner(
    make_device: MakeDevice, mode: Mode, forge: Forge
) -> None:
    alpha, beta, gamma = make_device("alpha"), make_device("beta"), make_device("gamma")
    mallory_identity, mallory_store = make_device("mallory")
    _pair_victim(alpha[1], gamma[0])  # gamma is already paired with alpha
    der, key, rule = forge(gamma[0])
    mallory = identity_with(mallory_identity, der, key)
    async with running_offer(*alpha, mode, once=True) as offer:
        secret = parse_secret(offer.listening.code)
        with pytest.raises(PairingFailed) as caught:
            await join((mallory, mallory_store), offer.listening.port, secret)
        assert "refused this device's certificate" in str(caught.value)
        refused = await offer.next_event()
        assert isinstance(refused, JoinerRefused)
        assert rule.value in refused.reason
        # No code spent: the honest joiner pairs with the very same code (with --once).
        peer = await join(beta, offer.listening.port, secret)
        assert peer.fingerprint == alpha[0].fingerprint
        paired = await asyncio.wait_for(offer.task, 10)
    assert paired.fingerprint == beta[0].fingerprint
    assert {p.fingerprint for p in alpha[1].peers()} == {gamma[0].fingerprint,
                                                         beta[0].fingerprint}
    assert mallory_store.peers() == []
    assert any(rule.value in reason for reason in failures(alpha[1]))
    assert failures(mallory_store) != []


@MODES
@HOSTILE
async def test_joiner_refuses_the_offerers_certificate_before_sending_any_proof(
    make_device: MakeDevice, mode: Mode, forge: Forge
) -> None:
    beta, gamma = make_device("beta"), make_device("gamma")
    mallory_identity, _ = make_device("mallory")
    _pair_victim(beta[1], gamma[0])
    der, key, rule = forge(gamma[0])
    mallory = identity_with(mallory_identity, der, key)
    seen: list[list[bytes]] = []

    async def fake_offerer(leg: Leg) -> None:
        seen.append(await leg.read_until_closed())

    async with hostile_server(server_tls(mallory), fake_offerer) as server:
        with pytest.raises(CertificateRefused) as caught:
            await join(beta, server.port, fresh_secret(mode))
        await server.next_finished()
    assert caught.value.rule is rule
    assert rule.value in str(caught.value)
    # The joiner sent nothing that depends on the secret: one ERROR frame, no proof.
    assert [(frame_type(f), frame_body(f)) for f in seen[0]] == [
        (FrameType.ERROR, bytes([FailureReason.CERTIFICATE_REFUSED]))]
    assert [p.fingerprint for p in beta[1].peers()] == [gamma[0].fingerprint]
    assert any(rule.value in reason for reason in failures(beta[1]))


@MODES
def test_a_certificate_refusal_spends_no_attempt_on_the_offer(mode: Mode) -> None:
    """Sans-I/O: either side's refusal reaches the other as ERROR(8) and claims nothing."""
    secret = make_secret(mode)
    offer = make_offer(secret)
    offerer, joiner = make_offerer(offer), make_joiner(secret)
    assert joiner.refuse_certificate() == Failed(reason=FailureReason.CERTIFICATE_REFUSED)
    assert offerer.receive_data(joiner.data_to_send(), now=0.0) == [
        Failed(reason=FailureReason.CERTIFICATE_REFUSED, remote=True)]
    assert (offer.state, offer.failures, offerer.attempt_spent) == (OfferState.OPEN, 0, False)
    second, joiner = make_offerer(offer), make_joiner(secret)
    joiner.start()
    second.refuse_certificate()
    assert joiner.receive_data(second.data_to_send()) == [
        Failed(reason=FailureReason.CERTIFICATE_REFUSED, remote=True)]
    assert (offer.state, offer.failures) == (OfferState.OPEN, 0)
    with pytest.raises(RuntimeError):
        joiner.refuse_certificate()


async def test_refused_joiner_names_the_rule_its_own_certificate_breaks(
    make_device: MakeDevice,
) -> None:
    alpha = make_device("alpha")
    mallory_identity, mallory_store = make_device("mallory")
    key = p256()
    mallory = identity_with(mallory_identity, forge_cert(key, ca=True), key)
    async with running_offer(*alpha) as offer:
        with pytest.raises(PairingFailed) as caught:
            await run_join(identity=mallory, store=mallory_store, host=LOOPBACK,
                           port=offer.listening.port,
                           secret=parse_secret(offer.listening.code))
    message = str(caught.value)
    assert ProfileRule.CA_TRUE.value in message
    assert "\n" not in message


def test_cli_refusals_exit_1_with_one_line_naming_the_rule_and_the_code_still_pairs(
    homes: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = homes
    mallory = tmp_path / "mallory"
    init(mallory, "mallory")
    key = p256()
    write_identity(mallory, forge_cert(key, ca=True), key)
    # mallory joins the honest offerer: refused, and the offerer's code stays valid.
    offerer = Offerer(a, "--no-advertise", "--once")
    result = run(mallory, "join", offerer.address, offerer.code)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "refused this device's certificate" in result.stderr
    assert ProfileRule.CA_TRUE.value in result.stderr
    refused = offerer.next_event()
    assert refused["event"] == "refused" and ProfileRule.CA_TRUE.value in refused["reason"]
    assert run(b, "join", offerer.address, offerer.code).returncode == 0
    code, rest, _ = offerer.finish()
    assert code == 0 and rest[-1]["event"] == "paired"
    # mallory offers: the honest joiner refuses her before sending any proof.
    hostile = Offerer(mallory, "--no-advertise")
    try:
        result = run(b, "join", hostile.address, hostile.code)
    finally:
        hostile.kill()
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"peer certificate refused: {ProfileRule.CA_TRUE.value}" in result.stderr
    assert [p["name"] for p in peers(b)] == ["alpha"]
    assert peers(mallory) == []
    assert any(ProfileRule.CA_TRUE.value in reason for _, reason in events(b))
