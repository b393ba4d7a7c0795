"""The rules a peer's new certificate must meet: the pairing profile, no name collision.

Delegates to :mod:`certpair.profile` (the rules applied at pairing); the name collision
becomes the store's CONFLICT verdict.
"""

from __future__ import annotations

from certpair.profile import CertificateRefused, check_name_collision, check_peer_certificate
from certpair.store import SuccessorVerdict

__all__ = ["check_successor", "check_successor_names"]


def check_successor(cert_der: bytes) -> None:
    """Check the new certificate's profile, as at pairing.

    Raises:
        CertificateRefused: the certificate breaks a rule (the message names it).
    """
    check_peer_certificate(cert_der)


def check_successor_names(cert_der: bytes, others: list[bytes]) -> None:
    """Refuse a successor whose subject or names equal another trusted certificate's.

    Raises:
        SuccessorVerdict: ``CONFLICT``.
    """
    try:
        check_name_collision(cert_der, others)
    except CertificateRefused:
        raise SuccessorVerdict("CONFLICT") from None
