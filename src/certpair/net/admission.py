"""Whether a pairing peer's certificate may be paired at all, checked by both drivers.

Run right after the TLS handshake, before any proof is sent or judged: a refused
certificate spends no attempt and learns nothing about the secret.
"""

from __future__ import annotations

from certpair.identity import Identity
from certpair.profile import (
    CertificateRefused,
    ProfileRule,
    check_name_collision,
    check_peer_certificate,
)
from certpair.store import TrustStore

__all__ = ["check_new_peer", "why_peer_refused_us"]


def check_new_peer(store: TrustStore, identity: Identity, cert_der: bytes) -> None:
    """Check a pairing peer's certificate: the profile, then the name-collision rule.

    The peer's subject and names are compared with every paired device's and with this
    device's own (a peer posing as this device is refused too).

    Raises:
        CertificateRefused: the certificate breaks a rule; its message names the rule.
        StoreUnusable: the store cannot be read.
    """
    check_peer_certificate(cert_der)
    check_name_collision(cert_der, [identity.cert_der, *(p.cert_der for p in store.peers())])


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
