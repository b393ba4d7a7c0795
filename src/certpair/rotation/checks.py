"""The rules a peer's new certificate must meet: the pairing profile, and no collision.

The profile is :mod:`certpair.profile`'s, applied as at pairing. The collision rule is
enforced by the store where the successor is written (its identity index: no other
peer's subject or names, pending successors included); this device's own certificates,
current and pending, which the store does not hold, are passed to it by the sync
driver (:mod:`certpair.rotation.exchange`).
"""

from __future__ import annotations

from certpair.profile import check_peer_certificate

__all__ = ["check_successor"]


def check_successor(cert_der: bytes) -> None:
    """Check the new certificate's profile, as at pairing.

    Raises:
        CertificateRefused: the certificate breaks a rule (the message names it).
    """
    check_peer_certificate(cert_der)
