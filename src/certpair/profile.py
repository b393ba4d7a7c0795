"""The certificate profile a peer must meet before certpair will ever trust it.

A paired certificate becomes a trust anchor. An anchor that can sign (CA:TRUE, keyUsage
keyCertSign or cRLSign, or an old X.509 v1/v2 certificate, which OpenSSL treats as a CA)
would let its holder mint certificates for new keys that every trusted context accepts;
an anchor whose subject or names equal another paired device's would let its holder be
accepted as that device by anything that checks names (curl, ``openssl s_client``). So
both sides of a pairing check the peer's certificate right after the TLS handshake,
before anything that depends on the secret is sent and before the code is claimed: a
refused certificate costs no attempt.

Checks raise :class:`CertificateRefused` (a :class:`~certpair.errors.PairingFailed`, so
exit status 1); its ``rule`` says which rule, and its message names it in one line.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from certpair.errors import PairingFailed
from certpair.identity import fingerprint

__all__ = [
    "CertificateNames",
    "CertificateRefused",
    "ProfileRule",
    "certificate_keys",
    "certificate_names",
    "check_name_collision",
    "check_peer_certificate",
    "extra_dns_names",
]

# cryptography loads with the first certificate parsed, not with this module: a process
# whose store never checks a new peer (a tunnel) does without it (docs/PERFORMANCE.md).
if TYPE_CHECKING:
    from cryptography import x509

_Ext = TypeVar("_Ext", bound="x509.ExtensionType")


class ProfileRule(enum.Enum):
    """Each rule of the profile; the value is the short form shown to users and logs."""

    UNPARSEABLE = "not a parseable X.509 certificate"
    OLD_VERSION = "X.509 v1/v2 certificate (v3 required)"
    NO_BASIC_CONSTRAINTS = "no basicConstraints extension"
    CA_TRUE = "basicConstraints CA:TRUE"
    KEY_CERT_SIGN = "keyUsage keyCertSign"
    CRL_SIGN = "keyUsage cRLSign"
    WILDCARD_NAME = "wildcard DNS name"
    KEY_TYPE = "unsupported key type (P-256 or Ed25519 only)"
    NAME_COLLISION = "subject or name of an already-paired device"


class CertificateRefused(PairingFailed):
    """A peer's certificate breaks the profile; nothing was stored and no code was spent.

    Attributes:
        rule: the rule it breaks.
    """

    def __init__(self, rule: ProfileRule, detail: str = "") -> None:
        self.rule = rule
        text = f"peer certificate refused: {rule.value}"
        super().__init__(f"{text} ({detail})" if detail else text)


@dataclass(frozen=True, kw_only=True)
class CertificateNames:
    """The names a TLS client may match a certificate by.

    Attributes:
        subject: the subject, canonicalised (RFC 4514, case-folded, blanks collapsed);
            empty for an empty subject.
        names: subjectAltName entries (DNS names lower-cased without a trailing dot, IP
            addresses in canonical form, URIs, e-mail addresses), plus the subject's
            common names when the certificate has no DNS name, since host-name checks
            fall back to the common name then.
    """

    subject: str
    names: frozenset[str]


def _load(der: bytes) -> x509.Certificate:
    from cryptography import x509  # noqa: PLC0415

    try:
        cert = x509.load_der_x509_certificate(der)
        _ = cert.version  # raises for a version cryptography does not know (v2)
    except (ValueError, x509.InvalidVersion) as exc:
        if isinstance(exc, x509.InvalidVersion):
            raise CertificateRefused(ProfileRule.OLD_VERSION) from None
        raise CertificateRefused(ProfileRule.UNPARSEABLE) from None
    return cert


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    from cryptography import x509  # noqa: PLC0415

    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        # Duplicate or malformed extensions: cryptography refuses to parse them.
        raise CertificateRefused(ProfileRule.UNPARSEABLE) from None


def _dns(name: str) -> str:
    return name.rstrip(".").lower()


def check_peer_certificate(der: bytes) -> None:
    """Check that a peer's certificate can only ever be a leaf certpair would make.

    Rules, in order: parseable; X.509 v3; a basicConstraints extension with CA:FALSE;
    keyUsage (if present) without keyCertSign or cRLSign; no wildcard DNS name; a P-256
    (ECDSA) or Ed25519 public key.

    Args:
        der: the certificate, DER-encoded, as observed on the wire.

    Raises:
        CertificateRefused: the certificate breaks a rule; ``rule`` says which.
    """
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    cert = _load(der)
    if cert.version is not x509.Version.v3:
        raise CertificateRefused(ProfileRule.OLD_VERSION)
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None:
        raise CertificateRefused(ProfileRule.NO_BASIC_CONSTRAINTS)
    if constraints.ca:
        raise CertificateRefused(ProfileRule.CA_TRUE)
    usage = _extension(cert, x509.KeyUsage)
    if usage is not None and usage.key_cert_sign:
        raise CertificateRefused(ProfileRule.KEY_CERT_SIGN)
    if usage is not None and usage.crl_sign:
        raise CertificateRefused(ProfileRule.CRL_SIGN)
    alt = _extension(cert, x509.SubjectAlternativeName)
    dns_names = alt.get_values_for_type(x509.DNSName) if alt is not None else []
    common = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if any("*" in name for name in dns_names) or (not dns_names and any("*" in c for c in common)):
        raise CertificateRefused(ProfileRule.WILDCARD_NAME)
    try:
        key = cert.public_key()
    except ValueError:
        raise CertificateRefused(ProfileRule.KEY_TYPE) from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return
    raise CertificateRefused(ProfileRule.KEY_TYPE)


def certificate_names(der: bytes) -> CertificateNames:
    """Return the subject and names a TLS client may match this certificate by.

    Args:
        der: the certificate, DER-encoded.

    Returns:
        The canonical subject and the set of names (see :class:`CertificateNames`).

    Raises:
        CertificateRefused: the certificate cannot be parsed (rule ``UNPARSEABLE`` or
            ``OLD_VERSION``).
    """
    from cryptography import x509  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    cert = _load(der)
    subject = " ".join(cert.subject.rfc4514_string().casefold().split())
    names: set[str] = set()
    alt = _extension(cert, x509.SubjectAlternativeName)
    dns_names: list[str] = []
    if alt is not None:
        dns_names = [_dns(n) for n in alt.get_values_for_type(x509.DNSName)]
        names.update(f"dns:{n}" for n in dns_names)
        names.update(
            f"ip:{ipaddress.ip_address(ip)}"
            for ip in alt.get_values_for_type(x509.IPAddress)
            if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
        )
        names.update(f"uri:{u}" for u in alt.get_values_for_type(x509.UniformResourceIdentifier))
        names.update(f"email:{e.lower()}" for e in alt.get_values_for_type(x509.RFC822Name))
    if not dns_names:
        for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            names.add(f"dns:{_dns(str(attribute.value))}")
    return CertificateNames(subject=subject, names=frozenset(names))


def certificate_keys(der: bytes) -> frozenset[str]:
    """The identity keys of a certificate: ``subject:`` + its canonical subject (unless
    empty) and each of its names (``dns:``, ``ip:``, ``uri:``, ``email:``).

    Two certificates of different devices must never share one (the store indexes them,
    see :mod:`certpair.store.identity_keys`).

    Raises:
        CertificateRefused: the certificate cannot be parsed.
    """
    names = certificate_names(der)
    subject = {f"subject:{names.subject}"} if names.subject else set()
    return frozenset(subject | names.names)


def check_name_collision(der: bytes, paired: Iterable[bytes]) -> None:
    """Refuse a new peer whose subject or any name equals one of ``paired``'s.

    A certificate identical to a paired one (the same device pairing again) is not a
    collision. Pairing and rotation look keys up in the store's index instead; this
    compares with a few certificates at hand (this device's own, current and pending).

    Args:
        der: the new peer's certificate, DER-encoded.
        paired: the DER certificates to compare with.

    Raises:
        CertificateRefused: rule ``NAME_COLLISION``; the message names the other
            certificate's fingerprint (never a name the new peer chose).
    """
    new = certificate_keys(der)
    for other_der in paired:
        if other_der == der:
            continue
        try:
            other = certificate_keys(other_der)
        except CertificateRefused:
            continue  # an unparseable certificate matches no TLS client's name either
        if new & other:
            raise CertificateRefused(
                ProfileRule.NAME_COLLISION, f"matches {fingerprint(other_der)[:23]}"
            )


def extra_dns_names(der: bytes, device_name: str) -> list[str]:
    """The DNS names a certificate claims beyond what certpair gives a device: its
    ``<device id>.certpair.invalid`` name, and the device's own name.

    A TLS client checking names accepts the device under each of these (an unpinned
    ``peers.pem`` export vouches for them), so pairing tells the user.
    """
    try:
        names = certificate_names(der)
    except CertificateRefused:
        return []
    own = device_name.strip().rstrip(".").lower()
    return sorted(n.removeprefix("dns:") for n in names.names
                  if n.startswith("dns:") and not n.endswith(".certpair.invalid")
                  and n.removeprefix("dns:") != own)
