"""The certificate profile (issue 10 §1): every certificate that could sign another, or
carries a key certpair does not make, or poses under a paired device's names, is refused
with the rule it breaks. Pairing-level tests (both sides, nothing stored, no code spent)
are in ``test_profile_at_pairing.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from certpair.errors import PairingFailed
from certpair.identity import KeyType, create_identity
from certpair.profile import (
    CertificateRefused,
    ProfileRule,
    certificate_names,
    check_name_collision,
    check_peer_certificate,
)
from tests.attacks.forged_certs import AnyKey, forge_cert, forge_v1_cert, key_usage, p256


@pytest.mark.parametrize("key_type", list(KeyType))
def test_every_certificate_certpair_makes_passes_the_profile(
    tmp_path: Path, key_type: KeyType
) -> None:
    identity = create_identity(tmp_path, "alpha", key_type=key_type)
    check_peer_certificate(identity.cert_der)


@pytest.mark.parametrize(
    ("der", "rule"),
    [
        (lambda: forge_cert(ca=True), ProfileRule.CA_TRUE),
        (lambda: forge_cert(ca=None), ProfileRule.NO_BASIC_CONSTRAINTS),
        (lambda: forge_cert(usage=key_usage(cert_sign=True)), ProfileRule.KEY_CERT_SIGN),
        (lambda: forge_cert(usage=key_usage(crl_sign=True)), ProfileRule.CRL_SIGN),
        (lambda: forge_v1_cert(version=0), ProfileRule.OLD_VERSION),
        (lambda: forge_v1_cert(version=1), ProfileRule.OLD_VERSION),
        (lambda: forge_cert(dns=["*.certpair.invalid"]), ProfileRule.WILDCARD_NAME),
        (lambda: forge_cert(dns=[], common_name="*.certpair.invalid"), ProfileRule.WILDCARD_NAME),
        (lambda: b"\x30\x03\x02\x01\x00", ProfileRule.UNPARSEABLE),
    ],
    ids=["ca-true", "no-basic-constraints", "keycertsign", "crlsign", "v1", "v2",
         "wildcard-san", "wildcard-cn", "garbage"],
)
def test_a_certificate_that_could_sign_or_pose_is_refused_naming_its_rule(
    der: Callable[[], bytes], rule: ProfileRule
) -> None:
    with pytest.raises(CertificateRefused) as caught:
        check_peer_certificate(der())
    assert caught.value.rule is rule
    assert isinstance(caught.value, PairingFailed)
    message = str(caught.value)
    assert rule.value in message
    assert "\n" not in message


def _rsa() -> AnyKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: ec.generate_private_key(ec.SECP256K1()),
        _rsa,
        ed448.Ed448PrivateKey.generate,
    ],
    ids=["p384", "secp256k1", "rsa2048", "ed448"],
)
def test_a_key_certpair_does_not_make_is_refused(make_key: Callable[[], AnyKey]) -> None:
    with pytest.raises(CertificateRefused) as caught:
        check_peer_certificate(forge_cert(make_key()))
    assert caught.value.rule is ProfileRule.KEY_TYPE


def test_ed25519_and_p256_leaves_pass() -> None:
    check_peer_certificate(forge_cert(p256()))
    check_peer_certificate(forge_cert(ed25519.Ed25519PrivateKey.generate()))


def test_certificate_names_include_subject_sans_and_the_cn_only_without_a_dns_san() -> None:
    with_san = certificate_names(forge_cert(common_name="beta", dns=["X.certpair.invalid."]))
    assert with_san.names == frozenset({"dns:x.certpair.invalid"})
    assert "cn=beta" in with_san.subject
    without_san = certificate_names(forge_cert(common_name="Y.certpair.invalid", dns=[]))
    assert without_san.names == frozenset({"dns:y.certpair.invalid"})


def test_a_san_equal_to_a_paired_devices_san_is_a_collision(tmp_path: Path) -> None:
    victim = create_identity(tmp_path, "beta").cert_der
    victim_name = x509.load_der_x509_certificate(victim).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)[0]
    for posing in (
        forge_cert(dns=[victim_name]),
        forge_cert(dns=["other.example", victim_name.upper()]),
        forge_cert(dns=[], common_name=victim_name),  # host-name checks fall back to the CN
    ):
        with pytest.raises(CertificateRefused) as caught:
            check_name_collision(posing, [victim])
        assert caught.value.rule is ProfileRule.NAME_COLLISION


def test_a_subject_equal_to_a_paired_devices_subject_is_a_collision(tmp_path: Path) -> None:
    victim = create_identity(tmp_path, "beta").cert_der
    subject = x509.load_der_x509_certificate(victim).subject
    with pytest.raises(CertificateRefused) as caught:
        check_name_collision(forge_cert(subject=subject), [victim])
    assert caught.value.rule is ProfileRule.NAME_COLLISION


def test_two_honest_devices_with_the_same_name_do_not_collide(tmp_path: Path) -> None:
    first = create_identity(tmp_path / "a", "beta").cert_der
    second = create_identity(tmp_path / "b", "beta").cert_der
    check_name_collision(second, [first])
    check_name_collision(first, [first])  # the same device pairing again is no collision
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "beta")])
    check_name_collision(forge_cert(subject=subject), [first])
