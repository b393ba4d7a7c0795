"""This device's pending rotation: the next key and certificate, beside the identity.

``identity/next-key.pem`` is written first (0600 from its first byte, atomically, like
the identity's key), then ``identity/next-cert.pem``; the certificate's presence is what
makes a rotation pending, so a crash in between leaves none (the stray key is removed
on the next start). Finishing replaces the certificate, then the key; a crash between
the two is completed by :func:`certpair.identity.load_identity`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from certpair.errors import BadInput, LocalStateError
from certpair.filemodes import fsync_directory, write_private
from certpair.identity import (
    Identity,
    KeyType,
    _generate_key,
    _key_pem,
    _self_signed,
    _spki,
    fingerprint,
    load_identity,
)

# cryptography loads only when a rotation is pending (or made): asking whether one is,
# as a tunnel does for each connection, is a stat.
if TYPE_CHECKING:
    from certpair.identity import PrivateKey

__all__ = [
    "NoRotationPending",
    "PendingRotation",
    "RotationPending",
    "abort_rotation",
    "finish_rotation",
    "load_pending",
    "pending_certificate",
    "start_rotation",
]


class RotationPending(BadInput):
    """A rotation is already pending; finish or abort it first."""


class NoRotationPending(BadInput):
    """There is no pending rotation to finish or abort."""


@dataclass(frozen=True, kw_only=True)
class PendingRotation:
    """The next key and certificate of this device."""

    key: PrivateKey = field(repr=False)
    cert_der: bytes = field(repr=False)
    key_path: Path
    cert_path: Path

    @property
    def fingerprint(self) -> str:
        """The new certificate's fingerprint."""
        return fingerprint(self.cert_der)


def _paths(home: Path) -> tuple[Path, Path]:
    return home / "identity" / "next-key.pem", home / "identity" / "next-cert.pem"


def pending_certificate(home: Path) -> Path:
    """The file that exists exactly while a rotation of ``home`` is pending (a caller
    asking often can keep the path and ``stat`` it before :func:`load_pending`)."""
    return _paths(home)[1]


def _key_type(key: PrivateKey) -> KeyType:
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    return KeyType.ED25519 if isinstance(key, ed25519.Ed25519PrivateKey) else KeyType.ECDSA_P256


def load_pending(home: Path) -> PendingRotation | None:
    """Return the pending rotation of ``home``, or None.

    Raises:
        LocalStateError: the files are unreadable or do not belong together.
    """
    key_path, cert_path = _paths(home)
    if not cert_path.exists():
        return None
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: PLC0415

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise LocalStateError(f"the pending rotation in {home} is unreadable") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise LocalStateError(f"the pending key in {home} has an unsupported type")
    if _spki(key) != _spki(cert):
        raise LocalStateError(f"the pending key and certificate in {home} do not match")
    return PendingRotation(key=key, cert_der=cert.public_bytes(serialization.Encoding.DER),
                           key_path=key_path, cert_path=cert_path)


def start_rotation(home: Path) -> tuple[Identity, PendingRotation]:
    """Make a new key (same type) and certificate (same name and profile), pending.

    Returns:
        The current identity and the pending rotation.

    Raises:
        NotInitialised: no identity.
        RotationPending: a rotation is already pending.
        LocalStateError: the files cannot be written.
    """
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    identity = load_identity(home)
    if load_pending(home) is not None:
        raise RotationPending("a rotation is already pending: see 'certpair rotate --status',"
                              " then --finish or --abort")
    key_path, cert_path = _paths(home)
    key = _generate_key(_key_type(identity.key))
    cert = _self_signed(key, identity.name)
    try:
        key_path.unlink(missing_ok=True)  # a stray key from a start that crashed
        write_private(key_path, _key_pem(key), 0o600)
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        key_path.unlink(missing_ok=True)  # no certificate: nothing is pending
        raise LocalStateError(f"cannot write the pending rotation in {home}: "
                              f"{_why(exc)}; no rotation was started") from exc
    pending = load_pending(home)
    assert pending is not None
    return identity, pending


def finish_rotation(home: Path) -> tuple[Identity, PendingRotation]:
    """Make the pending key and certificate this device's identity.

    Returns:
        The identity it had and the rotation that replaced it.

    Raises:
        NoRotationPending: nothing is pending.
        LocalStateError: the files cannot be replaced.
    """
    old = load_identity(home)
    pending = load_pending(home)
    if pending is None:
        raise NoRotationPending("no rotation is pending (start one with 'certpair rotate')")
    try:
        os.replace(pending.cert_path, old.cert_path)
        os.replace(pending.key_path, old.key_path)
        fsync_directory(old.cert_path.parent)
    except OSError as exc:
        raise LocalStateError(f"cannot switch to the new identity in {home}: "
                              f"{_why(exc)}") from exc
    return old, pending


def abort_rotation(home: Path) -> PendingRotation:
    """Drop the pending key and certificate.

    Raises:
        NoRotationPending: nothing is pending.
        LocalStateError: the files cannot be removed.
    """
    pending = load_pending(home)
    if pending is None:
        raise NoRotationPending("no rotation is pending")
    try:
        pending.cert_path.unlink()
        pending.key_path.unlink(missing_ok=True)
    except OSError as exc:
        raise LocalStateError(f"cannot remove the pending rotation: {_why(exc)}") from exc
    return pending


def _why(exc: OSError) -> str:
    return "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
