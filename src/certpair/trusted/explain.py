"""Why a certificate is not accepted, in words that tell a rotated device from a stranger."""

from __future__ import annotations

from certpair.store import Peer, TrustStore

__all__ = ["explain_certificate"]


def explain_certificate(store: TrustStore, fp: str, *, expected: Peer | None = None,
                        own_fingerprint: str | None = None) -> str:
    """Say why the certificate ``fp`` is not accepted, from what the store knows of it.

    A former key of a paired device (a key rotation replaced it), another paired
    device, this device's own key, and a certificate nobody here knows are told
    apart, so that a rotated peer is never called an impostor.

    Args:
        store: the trust store.
        fp: the fingerprint presented.
        expected: the device that was expected (a pinned connection), if any.
        own_fingerprint: this device's current fingerprint.

    Returns:
        One sentence, without the remote address.
    """
    device = store.device_of_fingerprint(fp)
    owner = store.peer_by_device(device) if device else None
    if expected is not None:
        head = f"not {expected.name}: it presents {fp}"
        if owner is not None and owner.device_id == expected.device_id:
            return (f"{expected.name} presents its former certificate {fp}, which its key "
                    f"rotation replaced by {owner.fingerprint}: the far end still runs on "
                    "the old key (restart it there)")
        if owner is not None:
            return f"{head}, the certificate of {owner.name}, another paired device"
    else:
        head = f"not a paired device: {fp}"
        if owner is not None and owner.fingerprint != fp:
            return (f"{fp} is the former certificate of {owner.name}, which a key rotation "
                    f"replaced by {owner.fingerprint}: that device still runs on the old "
                    "key (restart it there)")
    if own_fingerprint is not None and fp == own_fingerprint:
        return f"{head}, this device's own certificate"
    if expected is not None:
        pending = [f for f, state in store.device_fingerprints(expected.device_id).items()
                   if state == "pending"] if expected.device_id else []
        known = (f"; its new key {pending[0]} is pending here (learned from a rotation), "
                 "and this is not it either" if pending else "")
        return (f"{head}, which is not a certificate of {expected.name} this device knows"
                f"{known} (if {expected.name} rotated its key without this device learning "
                "it, pair again)")
    return head
