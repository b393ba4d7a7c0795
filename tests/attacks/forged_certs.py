"""Certificates a hostile device could present at pairing, identities that hold them,
and a joiner that knocks with one.

Every certificate here is self-signed by a key the attacker holds, so TLS accepts it
(the attacker can complete CertificateVerify); only certpair's profile can refuse it.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
import socket
import ssl
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certpair.identity import Identity, PrivateKey
from certpair.ports import ALPN_PAIRING

AnyKey = PrivateKey | rsa.RSAPrivateKey | ed448.Ed448PrivateKey

_DER = serialization.Encoding.DER


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_usage(*, cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def forge_cert(
    key: AnyKey | None = None,
    *,
    common_name: str = "mallory",
    subject: x509.Name | None = None,
    ca: bool | None = False,
    usage: x509.KeyUsage | None = None,
    dns: list[str] | None = None,
    issuer_key: AnyKey | None = None,
    issuer: x509.Name | None = None,
) -> bytes:
    """A v3 certificate for ``key``; ``ca=None`` leaves out basicConstraints.

    By default it looks like a certpair leaf: CA:FALSE, digitalSignature, both EKUs,
    a random ``.certpair.invalid`` DNS name. ``issuer_key``/``issuer`` sign it with
    another key (a leaf "issued" by an anchor).
    """
    key = key or p256()
    name = subject or x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "certpair"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(16)),
        ]
    )
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(usage or key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    names = dns if dns is not None else [f"{secrets.token_hex(16)}.certpair.invalid"]
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    signer = issuer_key or key
    algorithm = (
        None
        if isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(signer, algorithm).public_bytes(_DER)


def forge_v1_cert(key: ec.EllipticCurvePrivateKey | None = None, *, version: int = 0) -> bytes:
    """An X.509 v1 (``version=0``) or v2 (``version=1``) certificate: no extensions at all.

    cryptography only builds v3, so this uses pyOpenSSL's deprecated builder on purpose.
    """
    from OpenSSL import crypto

    key = key or p256()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cert = crypto.X509()
        cert.set_version(version)
        cert.get_subject().CN = "mallory"
        cert.set_issuer(cert.get_subject())
        cert.set_serial_number(x509.random_serial_number())
        cert.gmtime_adj_notBefore(-86400)
        cert.gmtime_adj_notAfter(86400 * 3650)
        pkey = crypto.PKey.from_cryptography_key(key)
        cert.set_pubkey(pkey)
        cert.sign(pkey, "sha256")
        der: bytes = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
    return der


def copy_names(of: bytes) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new key's certificate with the subject and names of ``of`` (a squatter's)."""
    victim = x509.load_der_x509_certificate(of)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(victim.subject)
               .issuer_name(victim.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(victim.not_valid_before_utc)
               .not_valid_after(victim.not_valid_after_utc))
    for extension in victim.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    return key, builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def identity_with(honest: Identity, der: bytes, key: Any) -> Identity:
    """An identity object that presents ``der`` (whose private key is ``key``).

    The files on disk stay the honest ones; the pairing drivers use the object.
    """
    return replace(honest, cert_der=der, key=key)


def write_identity(home: Path, der: bytes, key: AnyKey) -> None:
    """Replace the identity files in ``home`` with ``der`` and ``key`` (for CLI tests)."""
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    (home / "identity" / "cert.pem").write_bytes(pem)
    (home / "identity" / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def refused_joiner(directory: Path) -> ssl.SSLContext:
    """A pairing client whose certificate breaks the profile (a CA certificate): refused
    before any proof, so it spends nothing and can come back from any address. Its
    certificate and key are written to ``directory``."""
    key = p256()
    (directory / "ca.pem").write_bytes(ssl.DER_cert_to_PEM_cert(forge_cert(key, ca=True))
                                       .encode("ascii"))
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(directory / "ca.pem", directory / "key.pem")
    context.set_alpn_protocols([ALPN_PAIRING])
    return context


def knock(context: ssl.SSLContext, port: int, source: str = "127.0.0.1",
          timeout: float = 60.0) -> None:
    """Connect to a loopback offerer's ``port`` from ``source`` with ``context`` and read
    until the offerer hangs up (its refusal)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as raw, \
            context.wrap_socket(raw) as tls, \
            contextlib.suppress(ssl.SSLError, ConnectionError):
        while tls.recv(4096):
            pass
