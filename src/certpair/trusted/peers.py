"""Who a trusted connection's peer is, and which certificate this device presented on it.

:func:`admitted_peer` returns what the handshake admitted (no store read),
:func:`peer_of` asks the store again, :func:`presented_fingerprint` names this
device's side (which follows its rotations).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from certpair.errors import BadInput
from certpair.identity import fingerprint
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted.contexts import NotPaired, TrustedContext, _admit

__all__ = ["admitted_peer", "peer_of", "presented_fingerprint"]


def admitted_peer(connection: ssl.SSLSocket | ssl.SSLObject) -> Peer:
    """Return the peer this connection's handshake admitted, without asking the store.

    Every connection of this module's contexts is admitted once, in its handshake (one
    store read; :func:`peer_of` asks again). A caller that must know the peer is still
    trusted later watches :meth:`TrustStore.peers_version` against the context's
    ``peers_version`` (as ``certpair tunnel`` does).

    Raises:
        NotPaired: the connection was not admitted by a certpair context (not one of
            this module's, or its handshake is not done).
    """
    admitted: Peer | None = getattr(connection, "certpair_peer", None)
    if admitted is None:
        raise NotPaired("the connection was not admitted by a certpair context")
    return admitted


def peer_of(
    connection: ssl.SSLSocket | ssl.SSLObject, home_or_store: Path | TrustStore | None = None
) -> Peer:
    """Return the paired device whose certificate this connection's peer presented, as
    the store says now (:func:`admitted_peer` returns it as admitted at the handshake).

    Args:
        connection: a TLS connection after its handshake.
        home_or_store: certpair's home directory, or an open trust store; may be left
            out when the connection was made with one of this module's contexts.

    Returns:
        The stored peer with that certificate's fingerprint. A peer's pending
        successor (key rotation) is admitted too, and from then on is the peer's only
        certificate.

    Raises:
        NotPaired: no certificate, or one that belongs to no paired device.
        BadInput: no store given, and the connection's context is not certpair's.
        LocalStateError: the store is unusable.
    """
    der = connection.getpeercert(binary_form=True)
    if not der:
        raise NotPaired("the other side presented no certificate")
    context = connection.context
    if isinstance(context, TrustedContext):
        anchors = context._certpair
        admitted = anchors.admit(der)  # the pin, and the one admission rule
        if home_or_store is None or _same_home(home_or_store, anchors.store):
            return admitted  # asked of this home's store just now: not twice
    elif home_or_store is None:
        raise BadInput("peer_of needs the certpair home for a context not made by certpair")
    if isinstance(home_or_store, TrustStore):
        return _admit(home_or_store, der, fingerprint(der))
    with open_store(home_or_store) as store:
        return _admit(store, der, fingerprint(der))


def _same_home(home_or_store: Path | TrustStore, store: TrustStore) -> bool:
    """Whether a home or store is the one ``store`` was opened from."""
    if home_or_store is store:
        return True
    path = home_or_store.path if isinstance(home_or_store, TrustStore) else None
    try:
        if path is None:
            assert isinstance(home_or_store, Path)
            return home_or_store.samefile(store.path.parent)
        return path.samefile(store.path)
    except OSError:
        return False


def presented_fingerprint(connection: ssl.SSLSocket | ssl.SSLObject) -> str:
    """The fingerprint of the certificate this device presented on ``connection`` (its
    identity when the context was last built: after ``rotate --finish`` the new one).

    Raises:
        BadInput: the connection's context is not certpair's.
    """
    context = connection.context
    if not isinstance(context, TrustedContext):
        raise BadInput("presented_fingerprint needs a context made by certpair")
    return context._presents


def _store_of(context: ssl.SSLContext, home: Path) -> Path | TrustStore:
    return context._certpair.store if isinstance(context, TrustedContext) else home
