"""The contexts that follow the trust store, and the check of a connection's peer.

:func:`server_context` and :func:`client_context` build :class:`TrustedContext` objects
whose trust anchors are the store's peers, refreshed for each new connection (see the
package documentation); :func:`peer_of` maps a connection back to its stored peer.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from certpair.errors import CertpairError, LocalStateError, PairingFailed
from certpair.identity import fingerprint, identity_files
from certpair.store import Peer, StoreUnusable, TrustStore, open_store
from certpair.store.anchors import anchor_problem
from certpair.trusted.explain import explain_certificate

__all__ = [
    "REFUSALS",
    "NotPaired",
    "PeerRefused",
    "TrustedContext",
    "client_context",
    "server_context",
]

Setting = Callable[[ssl.SSLContext, Any], None]  # an SSLContext method itself, not its name
# Settings a caller may change on a context; a fresh context copies them, in this order.
_COPIED = ("options", "minimum_version", "maximum_version", "verify_flags", "check_hostname",
           "verify_mode", "keylog_filename")


class NotPaired(PairingFailed):
    """The other side is not a paired device, or it does not trust this one."""


class PeerRefused(ssl.SSLCertVerificationError):
    """The handshake passed OpenSSL but its peer is not exactly one stored, usable leaf.

    Raised by ``do_handshake`` on connections of certpair's contexts; an ``OSError``
    like every other TLS failure, so servers log it and clients report it as such.
    """

    def __init__(self, message: str) -> None:
        super().__init__(1, message)
        self.reason = "CERTIFICATE_VERIFY_FAILED"
        self.library = "SSL"
        self.verify_code = 0
        self.verify_message = message


class TrustedContext(ssl.SSLContext):
    """An ``SSLContext`` that follows the trust store (see the package documentation).

    ``peers_version`` is the store's :meth:`~TrustStore.peers_version` this context was
    built at (-1 before the first build).
    """

    _certpair: _Anchors
    peers_version: int = -1
    _presents: str  # the fingerprint of this device's certificate it was built with

    def wrap_socket(
        self, sock: socket.socket, server_side: bool = False,
        do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Wrap ``sock`` with the context holding the store's current peers."""
        latest = self._latest()
        wrap = super().wrap_socket if latest is self else latest.wrap_socket
        return wrap(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                    server_hostname, session)

    def wrap_bio(
        self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
        server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap the BIO pair with the context holding the store's current peers."""
        latest = self._latest()
        if latest is not self:
            return latest.wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        made = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if isinstance(made, _CheckedObject) and server_side:
            made._refusals = REFUSALS.get()
        return made

    def _latest(self) -> TrustedContext:
        # A server's ClientHello callback moves each connection to the latest context,
        # reading the store for it: once per connection is enough. Start it on the last
        # context built, so that the move (which costs OpenSSL a copy of the context's
        # certificate state) happens only after a change.
        anchors = self._certpair
        if self.sni_callback == anchors._on_client_hello:
            return anchors.current or self
        return anchors.latest()

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        """Set ALPN here and on every context that later replaces this one."""
        self._certpair.remember(self, ssl.SSLContext.set_alpn_protocols, list(alpn_protocols))


def _check_handshake(connection: _CheckedSocket | _CheckedObject) -> None:
    """After OpenSSL's own checks: the peer's leaf must be a stored, usable peer (and the
    pinned one, for a pinned context). Nothing in the anchor directory is trusted on
    its own, and a chain that ends in a stored certificate but starts elsewhere fails.

    This is the one admission of a connection (one store read, or none while the peers
    have not changed since the same certificate was admitted): :func:`admitted_peer`
    returns the peer admitted here."""
    context = connection.context
    if isinstance(context, TrustedContext):
        try:
            connection.certpair_peer = context._certpair.admit(
                connection.getpeercert(binary_form=True), remembered=True)
        except NotPaired as exc:
            raise PeerRefused(str(exc)) from None


class _CheckedSocket(ssl.SSLSocket):
    certpair_peer: Peer | None = None

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_handshake(self)


# Set around an asyncio server's start_tls (``trusted.streams.start_server``): a server
# connection made while it is set sends the alert of a handshake OpenSSL refused before
# the connection is dropped, and records the refusal in the list.
REFUSALS: ContextVar[list[BaseException] | None] = ContextVar("certpair_refusals",
                                                              default=None)


class _CheckedObject(ssl.SSLObject):
    _refusals: list[BaseException] | None = None
    _refused: BaseException | None = None
    certpair_peer: Peer | None = None

    def do_handshake(self) -> None:
        if self._refused is not None:
            raise self._refused
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            if self._refusals is None:
                raise
            # asyncio (3.11) drops a failed handshake's connection without sending the
            # alert OpenSSL wrote, so the client would only see a close. Asking for more
            # input first makes asyncio send what is pending (the alert); the client's
            # next bytes or its close then end the handshake with the real error.
            self._refused = exc
            self._refusals.append(exc)
            raise ssl.SSLWantReadError("refused; the alert goes out first") from exc
        _check_handshake(self)


# wrap_socket/wrap_bio create these; asyncio drives SSLObject.do_handshake itself.
TrustedContext.sslsocket_class = _CheckedSocket
TrustedContext.sslobject_class = _CheckedObject


class _Anchors:
    """The store, and the contexts of one factory call that follow it: the peers (or the
    pinned device's certificates) and this device's own identity, both live."""

    def __init__(self, home: Path, *, server_side: bool, peer: str | Peer | None = None
                 ) -> None:
        # The files only: each build loads them into OpenSSL (nothing parsed here).
        self.cert_path, self.key_path = identity_files(home)
        self.store = open_store(home)
        self.server_side = server_side
        self.pinned: Peer | None = None
        self.pinned_gone = False
        if peer is not None:
            self.pinned = self.store.find_peer(peer) if isinstance(peer, str) else peer
            if not self.pinned.device_id:  # a record made by hand: find its device
                found = self.store.device_of_fingerprint(self.pinned.fingerprint)
                stored = self.store.peer_by_device(found) if found else None
                if stored is not None:
                    self.pinned = stored
        # A pinned device's certificates: its own and its pending successor (rotation).
        self.pinned_certs: dict[str, bytes] = {}
        self._lock = threading.RLock()
        self._version = -1
        self._own: tuple[int, ...] = ()
        self.own_fingerprint = fingerprint(ssl.PEM_cert_to_DER_cert(
            self.cert_path.read_text("ascii")))
        self._calls: dict[Setting, Any] = {}
        # Peers admitted since latest() last read peers_version (_admitted_at): every
        # change to the peers moves it (store triggers); see admit.
        self._admitted: dict[str, Peer] = {}
        self._admitted_at = -1
        self.first: TrustedContext | None = None
        self.current: TrustedContext | None = None

    def _own_stamp(self) -> tuple[int, ...]:
        """What identifies this device's certificate and key files (a rotation's
        ``--finish`` replaces both: new inodes)."""
        try:
            cert, key = os.stat(self.cert_path), os.stat(self.key_path)
        except OSError:
            return self._own  # mid-replacement or gone: keep what is loaded
        return (cert.st_ino, cert.st_mtime_ns, cert.st_size,
                key.st_ino, key.st_mtime_ns, key.st_size)

    def latest(self) -> TrustedContext:
        """The context for the next connection, rebuilt if the peers or this device's
        own key changed (``certpair rotate --finish`` in any process).

        A rebuild costs a few milliseconds at any store size (the anchors are looked
        up in the directory per handshake), and it drops OpenSSL's cache of anchors
        it looked up, so a removed peer is never served from it.
        """
        own = self._own_stamp()
        with self._lock:
            # Read under the lock: the admission cache follows the version in the order
            # the reads were made (see admit).
            version = self.store.peers_version()
            if version != self._admitted_at:
                self._admitted, self._admitted_at = {}, version
            if self.current is not None and version == self._version and own == self._own:
                return self.current
            if version != self._version or self.current is None:
                if self.pinned is None:
                    self.store.sync_anchors()  # repairs what a crashed writer left pending
                    # Read the version after the repair (which may bump it) and before
                    # the build: a change racing with this refresh shows up as a newer
                    # version next time, never as a missed one.
                    version = self.store.peers_version()
                else:
                    self._follow_pin()
            try:
                self.current = self._build()
            except LocalStateError:
                if self.current is None:
                    raise
                # This device's key and certificate are being switched right now:
                # keep the previous ones for this connection, try again at the next.
                return self.current
            self._version, self._own = version, own
            self.current.peers_version = version
            return self.current

    def _follow_pin(self) -> None:
        """Re-read the pinned device: its current certificate and pending successor."""
        assert self.pinned is not None
        if self.pinned.device_id:
            found = self.store.peer_by_device(self.pinned.device_id)
            if found is None:
                self.pinned_gone = True  # unpaired here: refused, with that reason
                return
            self.pinned = found
        self.pinned_certs = (self.store.acceptable_certificates(self.pinned.fingerprint)
                             or {self.pinned.fingerprint: self.pinned.cert_der})

    def admit(self, der: bytes | None, *, remembered: bool = False) -> Peer:
        """Return the stored peer this leaf certificate is, or raise NotPaired.

        ``remembered``: answer from the peers admitted since the peers last changed,
        without a store read. Every handshake reads ``peers_version`` first (a server's
        ClientHello callback, a client's ``wrap_bio``): a connection begun after an
        unpairing is refused as before; one unpaired during its own handshake is cut by
        a tunnel's trust watch within its 100 ms, like any open one. Refusals and a
        successor's completion (a write) are never remembered.
        """
        if not der:
            raise NotPaired("the other side presented no certificate")
        fp = fingerprint(der)
        if self.pinned is not None:
            if self.pinned_gone:
                raise NotPaired(f"{self.pinned.name} is no longer paired on this device "
                                "(it was unpaired here)")
            if fp not in self.pinned_certs:
                raise NotPaired(self.explain(fp))
        if not remembered:
            return _admit(self.store, der, fp)
        with self._lock:  # emptied by latest() whenever the version it reads moved
            version, known = self._admitted_at, self._admitted.get(fp)
        if known is not None:
            return known
        peer = _admit(self.store, der, fp)
        with self._lock:
            if peer.fingerprint == fp and self._admitted_at == version:
                self._admitted[fp] = peer  # read after the version: still the answer
        return peer

    def explain(self, fp: str) -> str:
        """Why a certificate is not acceptable here, from what the store knows of it: a
        device's former key (a rotation replaced it) is not called an impostor."""
        return explain_certificate(self.store, fp, expected=self.pinned,
                                   own_fingerprint=self.own_fingerprint)

    def remember(self, context: TrustedContext, setting: Setting, argument: Any) -> None:
        """Apply a setting now and to every context built later."""
        with self._lock:
            self._calls[setting] = argument
            for each in {id(c): c for c in (context, self.first, self.current) if c}.values():
                setting(each, argument)

    def _build(self) -> TrustedContext:
        side = ssl.PROTOCOL_TLS_SERVER if self.server_side else ssl.PROTOCOL_TLS_CLIENT
        context = TrustedContext(side)
        context._certpair = self
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        # The stored leaves are the anchors (PARTIAL_CHAIN also admits one that is not
        # self-signed); STRICT makes OpenSSL refuse, among others, any issuer that is
        # not a well-formed CA, so a paired leaf cannot "sign" another.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        try:
            # The files, not the identity loaded at start: a rotation replaces them.
            context.load_cert_chain(self.cert_path, self.key_path)
            own = ssl.PEM_cert_to_DER_cert(self.cert_path.read_text("ascii"))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LocalStateError("cannot load this device's certificate and key") from exc
        self.own_fingerprint = fingerprint(own)
        context._presents = self.own_fingerprint
        if self.server_side:
            context.num_tickets = 0  # no resumption: every connection shows its certificate
            context.sni_callback = self._on_client_hello
        try:
            if self.pinned is not None:
                context.load_verify_locations(cadata=b"".join(self.pinned_certs.values()))
            else:
                context.load_verify_locations(capath=str(self.store.anchors))
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise StoreUnusable("the trust anchors cannot be loaded") from exc
        if self.first is None:
            self.first = context
        else:
            for name in _COPIED:
                setattr(context, name, getattr(self.first, name))
            for setting, argument in self._calls.items():
                setting(context, argument)
        return context

    def _on_client_hello(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        try:
            latest = self.latest()
        except CertpairError:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR  # fail closed
        if connection.context is not latest:
            connection.context = latest
        return None


def server_context(home: Path) -> TrustedContext:
    """Return a server context that accepts exactly the paired devices of ``home``.

    Args:
        home: certpair's home directory (identity and trust store).

    Returns:
        A context that requires a client certificate and follows the store.

    Raises:
        NotInitialised: no identity in ``home``.
        LocalStateError: the identity or the store is unusable.
    """
    return _Anchors(home, server_side=True).latest()


def client_context(home: Path, *, peer: str | Peer | None = None) -> TrustedContext:
    """Return a client context that accepts exactly the paired devices of ``home``.

    Args:
        home: certpair's home directory (identity and trust store).
        peer: trust only this paired device (a name, a fingerprint or a prefix of one,
            or a :class:`Peer`): any other paired device is refused as the server.

    Returns:
        A context that presents this device's certificate and follows the store.

    Raises:
        NotInitialised: no identity in ``home``.
        PeerNotFound, AmbiguousPeer: ``peer`` names no paired device, or several.
        LocalStateError: the identity or the store is unusable.
    """
    return _Anchors(home, server_side=False, peer=peer).latest()


def _admit(store: TrustStore, der: bytes, fp: str) -> Peer:
    """The one rule for whom a connection may be: a stored peer (or a peer's pending
    successor, whose first use completes the rotation: a write), unflagged."""
    peer = store.admit(fp)
    if peer is None:
        raise NotPaired(explain_certificate(store, fp))  # "a former key of …", not a stranger
    # Found in the anchor directory, it met the profile (no parse: a tunnel does
    # without cryptography); else anchor_problem says why it is flagged.
    problem = ("a damaged row" if not peer.intact else
               None if store.anchored(peer.fingerprint, der) else anchor_problem(der))
    if problem is not None:
        raise NotPaired(f"paired device {fp} is flagged and not trusted: {problem}")
    return peer
