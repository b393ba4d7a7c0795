"""CPace password-authenticated key exchange, cipher suite CPACE-X25519-SHA512.

Implements the building blocks of draft-irtf-cfrg-cpace for the group G_X25519 with
SHA-512 as H, in the initiator-responder setting: generator derivation (generator_string,
decodeUCoordinate, Elligator 2), public shares, the verified scalar multiplication,
the intermediate session key ISK and the optional explicit key confirmation.

Every primitive (SHA-512, HMAC-SHA512, X25519) comes from the ``cryptography`` package;
only the string encodings and the Elligator 2 field arithmetic are written here.

The module is pure: it does no I/O, reads no clock and draws no randomness. Callers
supply the 32-byte scalars, sampled as the draft's G_X25519.sample_scalar() prescribes
(32 uniformly random bytes, e.g. ``os.urandom(32)``).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

__all__ = [
    "DSI",
    "FIELD_SIZE_BYTES",
    "S_IN_BYTES",
    "InvalidShare",
    "InvalidTag",
    "calculate_generator",
    "confirmation_key",
    "confirmation_tag",
    "generator_string",
    "intermediate_session_key",
    "lv_cat",
    "prepend_len",
    "public_share",
    "shared_point",
    "verify_confirmation_tag",
]

DSI = b"CPace255"
"""Domain-separation identifier G_X25519.DSI."""

S_IN_BYTES = 128
"""Input block size H.s_in_bytes of SHA-512."""

FIELD_SIZE_BYTES = 32
"""G_X25519.field_size_bytes: length of scalars, shares and K."""

_FIELD_SIZE_BITS = 255
_P = 2**255 - 19
_A = 486662
# Smallest non-square found by the draft's find_z_ell2 for GF(2^255 - 19).
_Z = 2
_IDENTITY = bytes(FIELD_SIZE_BYTES)
_ISK_LABEL = DSI + b"_ISK"
_MAC_LABEL = b"CPaceMac"


class InvalidShare(ValueError):
    """A peer's public share is malformed or yields the neutral element."""


class InvalidTag(ValueError):
    """A key-confirmation tag did not verify."""


def _sha512(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA512())
    digest.update(data)
    return digest.finalize()


def prepend_len(data: bytes) -> bytes:
    """Prefix ``data`` with its length encoded as unsigned LEB128.

    Args:
        data: The octet string to encode.

    Returns:
        The LEB128 encoding of ``len(data)`` followed by ``data``.
    """
    length = len(data)
    encoded = bytearray()
    while True:
        if length < 0x80:
            encoded.append(length)
        else:
            encoded.append((length & 0x7F) | 0x80)
        length >>= 7
        if length == 0:
            break
    return bytes(encoded) + data


def lv_cat(*parts: bytes) -> bytes:
    """Length-value concatenation: ``prepend_len(a0) || prepend_len(a1) || ...``.

    Args:
        *parts: Octet strings to encode, in order.

    Returns:
        The concatenation of every part with its length prepended.
    """
    return b"".join(prepend_len(part) for part in parts)


def generator_string(dsi: bytes, prs: bytes, ci: bytes, sid: bytes, s_in_bytes: int) -> bytes:
    """Build the string hashed to derive the generator.

    The zero padding makes DSI, PRS and padding fill the first hash block, so for short
    passwords the hashed length does not depend on the password length.

    Args:
        dsi: Domain-separation identifier of the group.
        prs: Password-related string.
        ci: Channel identifier.
        sid: Session identifier.
        s_in_bytes: Input block size of the hash function.

    Returns:
        ``lv_cat(dsi, prs, zero_bytes(len_zpad), ci, sid)``.
    """
    len_zpad = max(0, s_in_bytes - 1 - len(prepend_len(prs)) - len(prepend_len(dsi)))
    return lv_cat(dsi, prs, bytes(len_zpad), ci, sid)


def _decode_u_coordinate(u: bytes) -> int:
    # RFC 7748 masks the unused top bit but deliberately does not reduce mod p.
    masked = bytearray(u)
    masked[-1] &= (1 << (_FIELD_SIZE_BITS % 8)) - 1
    return int.from_bytes(masked, "little")


def _encode_u_coordinate(u: int) -> bytes:
    return (u % _P).to_bytes(FIELD_SIZE_BYTES, "little")


_HALF_A = _A * pow(2, -1, _P) % _P


def _elligator2(r: int) -> int:
    # Follows the draft's branch-free formulation; note that Python integer arithmetic is
    # not constant time, so this only avoids the obvious secret-dependent branch.
    # 1 + Z*r^2 is never 0 because -1/2 is a non-square mod p.
    denominator = (1 + _Z * r * r) % _P
    v = (-_A * pow(denominator, -1, _P)) % _P
    gv = (v * v * v + _A * v * v + v) % _P
    # Euler's criterion: 1 if v is a u-coordinate on the curve, p - 1 if on the twist,
    # in which case the formula below picks the other root -v - A.
    epsilon = pow(gv, (_P - 1) // 2, _P)
    return (epsilon * v - (1 - epsilon) * _HALF_A) % _P


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """Derive the session generator g from the password and session context.

    Args:
        prs: Password-related string.
        ci: Channel identifier (should bind the party identities).
        sid: Session identifier.

    Returns:
        The 32-byte little-endian encoded u-coordinate of g on Curve25519.
    """
    gen_str = generator_string(DSI, prs, ci, sid, S_IN_BYTES)
    gen_str_hash = _sha512(gen_str)[:FIELD_SIZE_BYTES]
    u = _decode_u_coordinate(gen_str_hash)
    return _encode_u_coordinate(_elligator2(u))


def _x25519(scalar: bytes, u: bytes) -> bytes:
    private_key = X25519PrivateKey.from_private_bytes(scalar)
    return private_key.exchange(X25519PublicKey.from_public_bytes(u))


def _check_scalar(scalar: bytes) -> None:
    if len(scalar) != FIELD_SIZE_BYTES:
        raise ValueError(f"scalar must be {FIELD_SIZE_BYTES} bytes")


def public_share(scalar: bytes, generator: bytes) -> bytes:
    """Compute the public share ``Y = X25519(scalar, g)`` to send to the peer.

    Args:
        scalar: 32 uniformly random bytes, kept secret by the caller.
        generator: The 32-byte generator from :func:`calculate_generator`.

    Returns:
        The 32-byte public share.

    Raises:
        ValueError: If ``scalar`` or ``generator`` is not 32 bytes, or the generator
            is a low-order point (the share would be the neutral element).
    """
    _check_scalar(scalar)
    if len(generator) != FIELD_SIZE_BYTES:
        raise ValueError(f"generator must be {FIELD_SIZE_BYTES} bytes")
    try:
        share = _x25519(scalar, generator)
    except ValueError:
        raise ValueError("generator is a low-order point") from None
    if constant_time.bytes_eq(share, _IDENTITY):
        raise ValueError("generator is a low-order point")
    return share


def shared_point(scalar: bytes, peer_share: bytes) -> bytes:
    """Compute ``K = G.scalar_mult_vfy(scalar, peer_share)`` and abort on the identity.

    K is an intermediate secret: feed it to :func:`intermediate_session_key` and do not
    expose it, since a leaked K allows an offline dictionary attack on the password.

    Args:
        scalar: The caller's own 32-byte secret scalar.
        peer_share: The 32-byte public share received from the peer.

    Returns:
        The 32-byte shared point K.

    Raises:
        ValueError: If ``scalar`` is not 32 bytes.
        InvalidShare: If ``peer_share`` is not 32 bytes or K is the neutral element,
            i.e. the peer sent a low-order point on the curve or its twist.
    """
    _check_scalar(scalar)
    if len(peer_share) != FIELD_SIZE_BYTES:
        raise InvalidShare(f"peer share must be {FIELD_SIZE_BYTES} bytes")
    try:
        k = _x25519(scalar, peer_share)
    except ValueError:
        # cryptography refuses an all-zero X25519 output; that is exactly G.I.
        raise InvalidShare("peer share yields the neutral element") from None
    # Belt and braces in case a backend returns G.I instead of raising.
    if constant_time.bytes_eq(k, _IDENTITY):
        raise InvalidShare("peer share yields the neutral element")
    return k


# Positional order mirrors the draft's ISK formula (sid, K, Ya, ADa, Yb, ADb).
def intermediate_session_key(
    sid: bytes, k: bytes, ya: bytes, ada: bytes, yb: bytes, adb: bytes
) -> bytes:
    """Derive ISK for the initiator-responder setting (transcript_ir).

    Both parties pass the initiator's message as (``ya``, ``ada``) and the responder's as
    (``yb``, ``adb``), regardless of which side they are.

    Args:
        sid: Session identifier.
        k: Shared point from :func:`shared_point`.
        ya: Initiator's public share Ya.
        ada: Initiator's associated data ADa.
        yb: Responder's public share Yb.
        adb: Responder's associated data ADb.

    Returns:
        The 64-byte ISK = SHA-512(lv_cat(DSI || b"_ISK", sid, K) || transcript_ir).
    """
    transcript_ir = lv_cat(ya, ada) + lv_cat(yb, adb)
    return _sha512(lv_cat(_ISK_LABEL, sid, k) + transcript_ir)


def confirmation_key(sid: bytes, isk: bytes) -> bytes:
    """Derive the key-confirmation MAC key from ISK.

    Args:
        sid: Session identifier.
        isk: Intermediate session key from :func:`intermediate_session_key`.

    Returns:
        The 64-byte mac_key = SHA-512(b"CPaceMac" || sid || ISK).
    """
    return _sha512(_MAC_LABEL + sid + isk)


def _mac(mac_key: bytes, y: bytes, ad: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(mac_key, hashes.SHA512())
    mac.update(lv_cat(y, ad))
    return mac


def confirmation_tag(mac_key: bytes, y: bytes, ad: bytes) -> bytes:
    """Compute a party's key-confirmation tag over the message it sent.

    Args:
        mac_key: Key from :func:`confirmation_key`.
        y: The public share this party sent.
        ad: The associated data this party sent.

    Returns:
        The 64-byte tag HMAC-SHA512(mac_key, lv_cat(y, ad)).
    """
    return _mac(mac_key, y, ad).finalize()


def verify_confirmation_tag(mac_key: bytes, y: bytes, ad: bytes, tag: bytes) -> None:
    """Check the peer's key-confirmation tag in constant time.

    Args:
        mac_key: Key from :func:`confirmation_key`.
        y: The public share the peer sent.
        ad: The associated data the peer sent.
        tag: The tag received from the peer.

    Raises:
        InvalidTag: If ``tag`` does not match.
    """
    try:
        _mac(mac_key, y, ad).verify(tag)
    except InvalidSignature:
        raise InvalidTag("confirmation failed") from None
