"""Whether a pairing peer's certificate may be paired at all, checked by both drivers.

Run right after the TLS handshake, before any proof is sent or judged: a refused
certificate spends no attempt and learns nothing about the secret.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpair.identity import Identity
from certpair.profile import (
    CertificateRefused,
    ProfileRule,
    check_name_collision,
    check_peer_certificate,
)
from certpair.store import TrustStore

# Beside the identity's certificate while a rotation is pending (rotation/pending.py).
_PENDING_CERT = "next-cert.pem"

__all__ = ["check_new_peer", "why_peer_refused_us"]


def check_new_peer(store: TrustStore, identity: Identity, cert_der: bytes) -> None:
    """Check a pairing peer's certificate: the profile, then the name-collision rule.

    The peer's subject and names are looked up in the store's identity index (every
    paired device's certificate and pending successor: a few index seeks, however many
    peers) and compared with this device's own certificates, current and pending (a
    peer posing as this device is refused too). The store enforces the same rule again
    where the peer is written (racing pairings); this is the early, friendly refusal.

    Raises:
        CertificateRefused: the certificate breaks a rule; its message names the rule.
        StoreUnusable: the store cannot be read.
    """
    check_peer_certificate(cert_der)
    check_name_collision(cert_der, _own_certificates(identity))
    holder = store.colliding_peer(cert_der)
    if holder is not None:
        raise CertificateRefused(ProfileRule.NAME_COLLISION, f"matches {holder[:23]}")


def _own_certificates(identity: Identity) -> list[bytes]:
    """This device's certificate and, while a rotation is pending, its next one."""
    own = [identity.cert_der]
    try:
        pem = identity.cert_path.with_name(_PENDING_CERT).read_bytes()
        own.append(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
    except (OSError, ValueError):
        pass  # none pending (an unreadable one is reported by the rotation commands)
    return own


def why_peer_refused_us(identity: Identity) -> str:
    """The rule our own certificate breaks, as far as this side can tell.

    The peer's ERROR frame carries no detail; our own certificate tells us whether it
    breaks the profile, and if it does not, the peer must hold a device with our names.
    """
    try:
        check_peer_certificate(identity.cert_der)
    except CertificateRefused as exc:
        return exc.rule.value
    return f"{ProfileRule.NAME_COLLISION.value}, as the peer sees it"
