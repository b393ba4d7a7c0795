"""hmac mode: the seed's two messages, exactly.

``m1 = HMAC-SHA256(K, b"request" || cert_joiner || cert_offerer)``
``m2 = HMAC-SHA256(K, b"response" || cert_joiner || cert_offerer)``

The labels are the seed's own words; DER is self-delimiting, so the concatenation is
unambiguous. The distinct labels are what stop m1 being played back as m2.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

__all__ = ["REQUEST_LABEL", "RESPONSE_LABEL", "InvalidProof", "compute", "verify"]

REQUEST_LABEL = b"request"
RESPONSE_LABEL = b"response"
MAC_SIZE = 32


class InvalidProof(ValueError):
    """An hmac-mode message did not verify."""


def _mac(key: bytes, label: bytes, cert_joiner: bytes, cert_offerer: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(label)
    mac.update(cert_joiner)
    mac.update(cert_offerer)
    return mac


def compute(key: bytes, label: bytes, cert_joiner: bytes, cert_offerer: bytes) -> bytes:
    """Compute m1 (``REQUEST_LABEL``) or m2 (``RESPONSE_LABEL``).

    Args:
        key: K.
        label: ``REQUEST_LABEL`` or ``RESPONSE_LABEL``.
        cert_joiner: the joiner's certificate, DER.
        cert_offerer: the offerer's certificate, DER.

    Returns:
        The 32-byte tag.
    """
    return _mac(key, label, cert_joiner, cert_offerer).finalize()


def verify(key: bytes, label: bytes, cert_joiner: bytes, cert_offerer: bytes, tag: bytes) -> None:
    """Check m1 or m2 in constant time.

    Raises:
        InvalidProof: the tag is wrong.
    """
    try:
        _mac(key, label, cert_joiner, cert_offerer).verify(tag)
    except InvalidSignature:
        raise InvalidProof("pairing failed") from None
