"""A paired device's routes: where it may be, and the blocking connect that reaches it.

:func:`route` gives ``peer``'s addresses from the address book in the one order
(:func:`certpair.reach.candidates`) and the DNS-SD lookup (:func:`announced`) to race
with them; :func:`connect_peer` races them (:func:`certpair.trusted.dial.reach`) for a
blocking ``ssl`` client pinned to the peer, where only the TLS check decides who
answered; :func:`presented_certificate` is the certificate an address presents, for the
words of a refusal.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from certpair.errors import CertpairError
from certpair.identity import fingerprint
from certpair.reach import ANNOUNCED, SERVE, Candidate, candidates
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted.dial import Discover, OtherDevice, Reached, reach, same_device
from certpair.trusted.explain import explain_certificate
from certpair.trusted.failures import connection_error
from certpair.trusted.peers import _store_of, peer_of

if TYPE_CHECKING:
    from certpair.browsing import Browser

__all__ = ["announced", "connect_peer", "fingerprints_of", "presented_certificate", "route"]


def presented_certificate(host: str, port: int, *, alpn: Sequence[str] = (),
                          timeout: float = 2.0) -> bytes:
    """The certificate the far end at ``host:port`` presents, read on a connection that
    verifies nothing and presents nothing (empty: none could be read). Only to say
    whose it is after a refused handshake: it proves nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        context.set_alpn_protocols(list(alpn))
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True) or b""
    except (OSError, ValueError):
        return b""


def connect_peer(peer: Peer, candidates: Sequence[Candidate], home: Path, *,
                 context: ssl.SSLContext, timeout: float, discover: Discover | None = None,
                 alpn: Sequence[str] = (), passed: list[str] | None = None,
                 ) -> tuple[ssl.SSLSocket, Peer, Candidate]:
    """Reach ``peer`` at the first of ``candidates`` where it, and no other device, answers.

    Args:
        peer: the paired device to reach.
        candidates: its addresses, in order (:func:`certpair.reach.candidates`).
        home: certpair's home directory.
        context: a client context (pinned to ``peer`` is best: the handshake refuses
            any other device).
        timeout: seconds to reach it, and for every later read or write.
        discover: DNS-SD lookup raced with the first attempt.
        alpn: the protocols ``context`` offers (to read a refused certificate with).
        passed: receives one line per address passed over (another device answered
            there), in order, also when no address answered for ``peer`` at all.

    Returns:
        The TLS socket, the verified peer (as stored now) and the address that won.

    Raises:
        NotPaired: only other devices answered, or ``peer`` refused this device.
        Expired, NetworkError: as for :func:`dial`.
    """
    store = _store_of(context, home)

    def attempt(reached: Reached) -> tuple[ssl.SSLSocket, Peer, Candidate]:
        used = reached.candidate
        try:
            tls = context.wrap_socket(reached.sock, server_hostname=used.host)
        except ssl.SSLCertVerificationError as exc:
            reached.sock.close()
            der = presented_certificate(used.host, used.port, alpn=alpn,
                                        timeout=min(2.0, timeout))
            why = (_explain(store, fingerprint(der), peer) if der
                   else f"not {peer.name}: {exc.verify_message}")
            raise OtherDevice(f"{used} is {why}" if why.startswith("not ")
                              else f"{used}: {why}") from exc
        except OSError as exc:
            reached.sock.close()
            raise connection_error(exc, str(used)) from exc
        try:
            found = peer_of(tls, store)
        except CertpairError:
            tls.close()
            raise
        if not same_device(found, peer):
            tls.close()
            raise OtherDevice(f"{used} is not {peer.name}: it is {found.name}")
        return tls, found, used

    return reach(peer.name, candidates, attempt, timeout=timeout, discover=discover,
                 passed=passed)


def _explain(store: Path | TrustStore, fp: str, peer: Peer) -> str:
    if isinstance(store, TrustStore):
        return explain_certificate(store, fp, expected=peer)
    with open_store(store) as opened:
        return explain_certificate(opened, fp, expected=peer)


def fingerprints_of(store: TrustStore, peer: Peer) -> set[str]:
    """The certificates ``peer``'s device may present now: its current one and a
    pending successor (what its announcement may carry)."""
    found = {peer.fingerprint}
    with contextlib.suppress(CertpairError):
        found |= set(store.acceptable_certificates(peer.fingerprint))
    return found


def announced(store: TrustStore, peer: Peer, service: str, *, timeout: float,
              interfaces: Sequence[str] = (), browser: Browser | None = None) -> Discover:
    """A :data:`Discover` that looks for ``peer``'s ``service`` announced with one of its
    fingerprints (DNS-SD, at most ``timeout`` seconds; on ``browser`` when one is
    shared, else on a browse of its own) and notes what it finds in the address book,
    as a hint."""
    from certpair.announce import SERVE_SERVICE_TYPE, TUNNEL_SERVICE_TYPE  # noqa: PLC0415
    from certpair.browsing import find_service  # noqa: PLC0415  # zeroconf loads slowly

    service_type = SERVE_SERVICE_TYPE if service == SERVE else TUNNEL_SERVICE_TYPE

    def discover(stop: threading.Event) -> list[Candidate]:
        fps = fingerprints_of(store, peer)
        found = (browser.find(fps, timeout=timeout, stop=stop) if browser is not None
                 else find_service(service_type, fps, timeout=timeout,
                                   interfaces=interfaces, stop=stop))
        for host, port in found:
            with contextlib.suppress(CertpairError):
                store.note_address(peer, host, port, service=service, source=ANNOUNCED)
        return [Candidate(host=host, port=port, source=ANNOUNCED) for host, port in found]

    return discover


def route(store: TrustStore, peer: Peer, service: str, default_port: int, *,
          discovery_timeout: float, interfaces: Sequence[str] = (),
          browser: Browser | None = None,
          ) -> tuple[list[Candidate], Discover | None]:
    """``peer``'s addresses from the address book, in order, and the DNS-SD lookup to
    race with them (None when ``discovery_timeout`` is 0)."""
    ordered = candidates(store.address_book(peer), service=service, default_port=default_port)
    discover = (announced(store, peer, service, timeout=discovery_timeout,
                          interfaces=interfaces, browser=browser)
                if discovery_timeout > 0 else None)
    return ordered, discover
