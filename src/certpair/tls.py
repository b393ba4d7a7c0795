"""TLS for the pairing connection (pyOpenSSL, memory BIOs, no sockets).

During pairing each side presents its own self-signed certificate and accepts
whatever certificate the peer presents: the pairing proof decides, and it binds the
certificate actually observed. Python's ``ssl`` cannot accept an unknown client
certificate on the server side, which is why pairing uses pyOpenSSL.

:class:`PairingTLS` is a TLS 1.3 engine over memory BIOs; the asyncio drivers in
``certpair.net`` move its bytes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from certpair.identity import Identity
from certpair.ports import ALPN_PAIRING, ALPN_PREFIX, alpn_offer
from certpair.protocol.events import Channel
from certpair.protocol.session import EXPORTER_LABEL

__all__ = [
    "EXPORTER_SIZE",
    "PairingTLS",
    "TLSFailure",
    "WrongPort",
    "pairing_context",
    "starts_like_tls",
]

EXPORTER_SIZE = 32
_PAIRING = ALPN_PAIRING.encode("ascii")
_PREFIX = ALPN_PREFIX.encode("ascii")
# The joiner offers the trusted services' names too, only so that a trusted port (serve,
# tunnel) names itself by selecting its own; the joiner then closes at once
# (docs/PROTOCOL.md §2).
_JOINER_OFFERS = [name.encode("ascii") for name in alpn_offer(ALPN_PAIRING)]
_MAX_CACHED = 8
_CONTEXTS: dict[tuple[bytes, bool], SSL.Context] = {}
_READ_CHUNK = 16384


def starts_like_tls(data: bytes) -> bool:
    """Whether ``data`` can begin a TLS handshake record (content type 22, version 3.x).

    A cheap first check on a new connection, so that junk is dropped before any TLS
    state is allocated for it.
    """
    return len(data) < 2 or (data[0] == 0x16 and data[1] == 0x03)


class TLSFailure(Exception):
    """The TLS layer failed: handshake refused, bad record, peer sent garbage."""


class WrongPort(TLSFailure):
    """The other side is a certpair port of another kind (ALPN says so)."""


def _select_pairing(conn: SSL.Connection, offered: list[bytes]) -> Any:
    # Returns bytes or SSL.NO_OVERLAPPING_PROTOCOLS, whose type pyOpenSSL keeps private.
    # A pairing client offers ALPN_PAIRING; one offering only other certpair protocols
    # (ping, a tunnel) has reached the wrong port: the handshake ends with the
    # no_application_protocol alert, which it reports precisely. A client without
    # certpair protocols in its list (or no ALPN at all) is served as before.
    del conn
    if _PAIRING in offered:
        return _PAIRING
    if any(name.startswith(_PREFIX) for name in offered):
        raise WrongPort("a client of a trusted certpair port reached the pairing port")
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _accept_any(
    conn: SSL.Connection, cert: object, errnum: int, depth: int, ok: int
) -> bool:
    # Any certificate is acceptable here; the pairing proof, not PKI, decides trust.
    del conn, cert, errnum, depth, ok
    return True


def pairing_context(identity: Identity, *, server_side: bool) -> SSL.Context:
    """The TLS 1.3-only context for one side of a pairing connection.

    Contexts are cached per certificate and side: building one (parsing the key and
    certificate) costs more than the rest of a pairing's local work. A certificate
    determines its key pair, so the certificate alone identifies the entry.

    Args:
        identity: this device's key and certificate, presented to the peer.
        server_side: true for the offerer.

    Returns:
        A pyOpenSSL context that requires a peer certificate and accepts any.
    """
    cache_key = (identity.cert_der, server_side)
    ctx = _CONTEXTS.get(cache_key)
    if ctx is None:
        ctx = _build_context(identity, server_side=server_side)
        if len(_CONTEXTS) >= _MAX_CACHED:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[cache_key] = ctx
    return ctx


def _build_context(identity: Identity, *, server_side: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
    ctx.use_certificate(x509.load_der_x509_certificate(identity.cert_der))
    ctx.use_privatekey(identity.key)
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
    # No resumption: every pairing run starts from a full handshake with certificates.
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if server_side:
        ctx.set_session_id(b"certpair-pairing")
        ctx.set_alpn_select_callback(_select_pairing)
    else:
        ctx.set_alpn_protos(_JOINER_OFFERS)
    return ctx


class PairingTLS:
    """One side of a pairing TLS connection, over memory BIOs."""

    def __init__(self, identity: Identity, *, server_side: bool) -> None:
        """Create the engine.

        Args:
            identity: this device's identity.
            server_side: true for the offerer (TLS server).
        """
        self._identity = identity
        self._server_side = server_side
        self._conn = SSL.Connection(pairing_context(identity, server_side=server_side), None)
        if server_side:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self.handshake_done = False

    def receive_bytes(self, data: bytes) -> None:
        """Hand bytes read from the socket to TLS."""
        self._conn.bio_write(data)

    def bytes_to_send(self) -> bytes:
        """Take every byte TLS wants written to the socket."""
        chunks = []
        while True:
            try:
                chunks.append(self._conn.bio_read(_READ_CHUNK))
            except SSL.WantReadError:
                break
        return b"".join(chunks)

    def do_handshake(self) -> bool:
        """Advance the handshake; returns True once it is complete.

        Raises:
            TLSFailure: the handshake failed (bad version, garbage, no certificate).
        """
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return False
        except WrongPort:
            raise
        except SSL.Error as exc:
            raise TLSFailure("TLS handshake failed") from exc
        self.handshake_done = True
        return True

    def protocol(self) -> str | None:
        """The ALPN protocol the handshake settled on, or None if none was."""
        selected = self._conn.get_alpn_proto_negotiated()
        return selected.decode("ascii", "replace") if selected else None

    def read(self) -> bytes:
        """Return the application bytes decrypted so far (possibly none).

        Raises:
            TLSFailure: a bad record, or the peer closed the TLS session.
        """
        chunks = []
        while True:
            try:
                chunks.append(self._conn.recv(_READ_CHUNK))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError as exc:
                if chunks:
                    break
                raise TLSFailure("peer closed the TLS session") from exc
            except SSL.Error as exc:
                raise TLSFailure("TLS record error") from exc
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        """Encrypt application bytes; take the records with :meth:`bytes_to_send`."""
        if data:
            self._conn.sendall(data)

    def close(self) -> None:
        """Queue a TLS close_notify."""
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()

    def channel(self) -> Channel:
        """Return the channel values both sides now share.

        Raises:
            TLSFailure: the handshake is incomplete or the peer sent no certificate.
        """
        if not self.handshake_done:
            raise TLSFailure("handshake not complete")
        peer = self._conn.get_peer_certificate(as_cryptography=True)
        if peer is None:
            raise TLSFailure("peer presented no certificate")
        peer_der = peer.public_bytes(serialization.Encoding.DER)
        exporter = self._conn.export_keying_material(EXPORTER_LABEL, EXPORTER_SIZE)
        own = self._identity.cert_der
        if self._server_side:
            return Channel(cert_offerer=own, cert_joiner=peer_der, exporter=exporter)
        return Channel(cert_offerer=peer_der, cert_joiner=own, exporter=exporter)
