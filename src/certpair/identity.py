"""A device's identity: private key, self-signed certificate and name, on disk.

The key file is created with mode 0600 from its first byte (``os.open`` with
``O_EXCL``), so no other user can ever read it. A new identity is written whole into a
new directory, which is then renamed into place (the directory fsynced), so a crash
leaves the old identity or the new one, never a mix; :func:`recover_identity` (run by
every load) finishes or undoes an interrupted replacement and removes leftovers. A key
file that group or others can read is refused, as ssh refuses one.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from certpair.errors import BadInput, LocalStateError, counted
from certpair.filemodes import check_key_mode, check_private, fsync_directory, write_private
from certpair.names import MAX_NAME_BYTES, check_name

__all__ = [
    "MAX_NAME_BYTES",
    "Identity",
    "IdentityExists",
    "KeyType",
    "NotInitialised",
    "PairedIdentity",
    "PrivateKey",
    "create_identity",
    "fingerprint",
    "identity_files",
    "load_identity",
    "recover_identity",
]

# cryptography loads when a key is made or parsed, not with this module: a process that
# only needs the files (a tunnel: ssl loads them itself) does without it (~9 MB).
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def __getattr__(name: str) -> object:  # PrivateKey, for a caller that needs it at run time
    if name != "PrivateKey":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: PLC0415

    return ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# RFC 5280 4.1.2.5: "no well-defined expiration date" — the certificate cannot change.
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class KeyType(enum.Enum):
    """Key algorithm of a new identity."""

    ECDSA_P256 = "ecdsa-p256"
    ED25519 = "ed25519"


class NotInitialised(LocalStateError):
    """No identity in this home; run ``certpair init``."""


class IdentityExists(LocalStateError):
    """An identity already exists and would be overwritten."""


@dataclass(frozen=True, kw_only=True)
class Identity:
    """A device's key, certificate and name."""

    name: str
    key: PrivateKey = field(repr=False)
    cert_der: bytes = field(repr=False)
    cert_path: Path
    key_path: Path

    @property
    def fingerprint(self) -> str:
        """``sha256:`` + lowercase hex of SHA-256 over the certificate's DER."""
        return fingerprint(self.cert_der)

    @property
    def home(self) -> Path:
        """The certpair home this identity lives in (what ``open_store`` and the
        context factories take)."""
        return self.cert_path.parent.parent


def fingerprint(cert_der: bytes) -> str:
    """Return the certpair fingerprint of a DER certificate.

    Args:
        cert_der: the certificate, DER-encoded.

    Returns:
        ``sha256:`` followed by 64 lowercase hex digits.
    """
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()


def _paths(home: Path) -> tuple[Path, Path, Path]:
    directory = home / "identity"
    return directory, directory / "key.pem", directory / "cert.pem"


def _generate_key(key_type: KeyType) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: PLC0415

    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _self_signed(key: PrivateKey, name: str) -> x509.Certificate:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    # A random serial and device id make the subject unique per device even when two
    # devices share a name.
    device_id = secrets.token_hex(16)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "certpair"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id),
        ]
    )
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(f"{device_id}.certpair.invalid")]),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


# An identity being written, a complete one about to replace the current one, and the
# one it replaced: names that recover_identity() knows how to finish or clean up.
_NEW, _READY, _OLD = ".identity.new-", ".identity.ready-", ".identity.old-"


class PairedIdentity(BadInput):
    """Replacing this identity would silently unpair it from every paired device."""


def recover_identity(home: Path) -> None:
    """Finish or undo an identity replacement that a crash interrupted; remove leftovers.

    A complete new identity whose rename into place did not happen is put in place (the
    old one was already moved aside); an incomplete one, or a complete one while the
    old identity is still in place (the replacement never started), is removed.
    Errors are ignored: loading then reports what it finds.

    Args:
        home: certpair's home directory.
    """
    directory = home / "identity"
    try:
        entries = [p for p in home.iterdir() if p.name.startswith((_NEW, _READY, _OLD))]
        ready = sorted(p for p in entries if p.name.startswith(_READY))
        if ready and not directory.exists():
            os.replace(ready[-1], directory)
            fsync_directory(home)
        for leftover in entries:
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    except OSError:
        pass


def _key_pem(key: PrivateKey) -> bytes:
    """A private key as its file holds it: PKCS #8 PEM, not encrypted (the file is 0600)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _spki(key: PrivateKey | x509.Certificate) -> bytes:
    """The DER public key of a private key or certificate: equal when they belong together."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def create_identity(
    home: Path, name: str, *, key_type: KeyType = KeyType.ECDSA_P256, force: bool = False,
    paired_devices: int = 0, unpair_all: bool = False,
) -> Identity:
    """Create this device's key and self-signed certificate under ``home``.

    The new files are written whole into a new directory, fsynced, and renamed into
    place as ``home/identity``: a crash at any moment leaves the old identity or the new
    one, never a key and a certificate that do not belong together.

    Args:
        home: certpair's home directory (created 0700 if missing).
        name: the device name shown to peers.
        key_type: key algorithm.
        force: replace an existing identity.
        paired_devices: how many devices trust the identity being replaced (from the
            trust store); with any, replacing needs ``unpair_all``.
        unpair_all: the caller knows (and has told the user) that every paired device
            must pair again.

    Returns:
        The new identity.

    Raises:
        IdentityExists: an identity exists and ``force`` is false.
        PairedIdentity: devices are paired with it and ``unpair_all`` is false.
        BadInput: the name is not acceptable.
        LocalStateError: the files cannot be written.
    """
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    check_name(name)
    recover_identity(home)
    directory, key_path, cert_path = _paths(home)
    if directory.exists() and not force:
        raise IdentityExists(f"an identity already exists in {home} (use --force to replace it)")
    if directory.exists() and paired_devices > 0 and not unpair_all:
        raise PairedIdentity(
            f"the identity in {home} is paired with {counted(paired_devices, 'device')}; a new key "
            "means each must pair again (confirm that to replace it)")
    token = secrets.token_hex(4)
    new, ready, old = (home / f"{prefix}{token}" for prefix in (_NEW, _READY, _OLD))
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        new.mkdir(mode=0o700)
        key = _generate_key(key_type)
        cert = _self_signed(key, name)
        write_private(new / key_path.name, _key_pem(key), 0o600)
        write_private(new / cert_path.name, cert.public_bytes(serialization.Encoding.PEM),
                       0o644)
        fsync_directory(new)
        os.replace(new, ready)  # complete: from here recovery rolls forward, not back
        replaced = directory.exists()
        if replaced:
            os.replace(directory, old)
        os.replace(ready, directory)
        fsync_directory(home)
        if replaced:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(new, ignore_errors=True)
        raise LocalStateError(f"cannot write the identity in {home}: {exc.strerror}") from exc
    return Identity(
        name=name,
        key=key,
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        cert_path=cert_path,
        key_path=key_path,
    )


def _resume_finish(home: Path, key_path: Path, cert_spki: bytes) -> PrivateKey:
    # 'certpair rotate --finish' replaces the certificate, then the key: a crash between
    # the two leaves the new certificate beside the old key and the new key pending.
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: PLC0415

    pending = key_path.with_name("next-key.pem")
    try:
        key = serialization.load_pem_private_key(pending.read_bytes(), password=None)
    except (OSError, ValueError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) or (
            _spki(key) != cert_spki):
        raise LocalStateError(f"the key and certificate in {home} do not belong together")
    try:
        os.replace(pending, key_path)
    except OSError as exc:
        raise LocalStateError(f"cannot complete the key rotation in {home}") from exc
    return key


def load_identity(home: Path) -> Identity:
    """Load the identity stored under ``home``.

    Args:
        home: certpair's home directory.

    Returns:
        The identity; its name is the certificate's common name.

    Raises:
        NotInitialised: no identity there.
        LocalStateError: the files are unreadable or do not belong together, or the
            key is readable by group or others.
        InsecurePath: the home or ``identity/`` is writable by group or others, or
            belongs to another user (as ssh's StrictModes).
    """
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key_path, cert_path = _checked_files(home)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise LocalStateError(f"the identity in {home} is unreadable") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise LocalStateError(f"the identity in {home} has an unsupported key type")
    if _spki(key) != _spki(cert):
        key = _resume_finish(home, key_path, _spki(cert))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else "unnamed"
    return Identity(
        name=name,
        key=key,
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        cert_path=cert_path,
        key_path=key_path,
    )


def _checked_files(home: Path) -> tuple[Path, Path]:
    check_private(home, "the certpair home")  # as ssh's StrictModes: no one else's to change
    recover_identity(home)
    directory, key_path, cert_path = _paths(home)
    if not key_path.exists() or not cert_path.exists():
        raise NotInitialised(f"no identity in {home}; run 'certpair init' first")
    check_private(directory, "the identity directory")
    check_key_mode(key_path)
    return key_path, cert_path


def identity_files(home: Path) -> tuple[Path, Path]:
    """``(cert_path, key_path)``, checked as :func:`load_identity` checks them, for a
    process that hands them to ``ssl`` (which checks that the key is the certificate's):
    nothing is parsed in Python, cryptography is not loaded, unless they do not belong
    together (then :func:`load_identity` finishes an interrupted rotation or says why).
    """
    import ssl  # noqa: PLC0415

    key_path, cert_path = _checked_files(home)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError):
        load_identity(home)
    return cert_path, key_path
