"""``tunnel connect``: listen locally and carry each connection to one paired device's
``tunnel serve``, after checking that the far end is exactly that device.

Per connection: connect to the device, the TLS handshake (the context is pinned to
PEER's device: its current certificate and a pending successor, read live), then,
independently of that pin, the peer the handshake admitted must be PEER's device
(``peer_of`` alone is not enough: any paired device would pass it), then the relay.
PEER is held by its device id, so its key rotations change nothing here; when PEER is
unpaired on this device, the tunnel says so once and stops. TLS 1.3
lets the client finish its handshake before the server has judged its certificate: a
far end that refuses this device shows as an alert on the first read, which ends that
connection with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from certpair.errors import CertpairError, NetworkError
from certpair.identity import fingerprint
from certpair.ports import ALPN_TUNNEL, alpn_offer
from certpair.reach import CONTACT, RELAYED, TUNNEL, Candidate
from certpair.relay import RelayAddress
from certpair.relay.race import RELAY_DELAY
from certpair.store import Peer, TrustStore, open_store
from certpair.trusted import (
    NotPaired,
    PeerRefused,
    admitted_peer,
    check_service,
    client_context,
    connection_error,
    explain_certificate,
)
from certpair.trusted.dial import Discover, OtherDevice, Reached, reach
from certpair.trusted.relayed import CUT_TRIES, dial_relayed, meeting_fingerprints
from certpair.tunnel.acceptor import address_of, listen, run_acceptor
from certpair.tunnel.address import PeerRoute
from certpair.tunnel.events import (
    Announced,
    Closed,
    Failed,
    Listening,
    OnEvent,
    Opened,
    PassedOver,
    Refused,
)
from certpair.tunnel.far_end import FarEnd
from certpair.tunnel.link import TlsLink, reset
from certpair.tunnel.preamble import Intent, KeySync, client_protocols, speaks_preamble
from certpair.tunnel.pump import HALF_CLOSE_TIMEOUT, Relay, arm_reset
from certpair.tunnel.watch import Connections, Refusals, TrustWatch, settle_pairing

__all__ = ["ConnectOptions", "connect_tunnel"]


_ROLE = "tunnel-client"


@dataclass(frozen=True, kw_only=True)
class ConnectOptions:
    """What ``tunnel connect`` was asked to do.

    ``source`` says where ``host:port`` came from (``--to``, ``pairing``, ``dns-sd``).
    Each connection races ``candidates`` (``host:port`` alone if empty) and, until one
    connection has succeeded, what ``discover`` finds (``trusted/dial.py``). With
    ``follow``, PEER's addresses are taken from the address book for each connection
    instead, kept current by a DNS-SD browse of ``discovery_timeout`` > 0 on
    ``interfaces`` (:class:`~certpair.tunnel.address.PeerRoute`). ``key_sync`` carries
    the key-rotation sync over the tunnel (tunnel/preamble.py).
    """

    home: Path
    peer: Peer
    host: str
    port: int
    source: str
    candidates: tuple[Candidate, ...] = ()
    discover: Discover | None = None
    listen_host: str
    listen_port: int
    max_connections: int = 1000
    connect_timeout: float = 10.0
    idle_timeout: float | None = None
    half_close_timeout: float | None = HALF_CLOSE_TIMEOUT
    drain_timeout: float = 10.0
    key_sync: KeySync | None = None
    relay: RelayAddress | None = None  # PEER's tunnel serve --relay, after host:port
    follow: bool = False
    discovery_timeout: float = 0.0
    interfaces: tuple[str, ...] = ()


class _Client:
    def __init__(self, options: ConnectOptions, store: TrustStore, on_event: OnEvent) -> None:
        self.options, self.store, self.on_event = options, store, on_event
        self.context = client_context(options.home, peer=options.peer)
        # Names the protocol, so that a port of another kind (a pairing port, a serve
        # port) refuses, or names itself, at once: never serve's protocol handed on.
        # On certpair/1-tunnel the preamble follows (tunnel/preamble.py).
        self.context.set_alpn_protocols(client_protocols())
        self.remote = address_of((options.host, options.port)) if options.host \
            else f"relay {options.relay}"
        self.connections = Connections(options.max_connections)
        self.refusals = Refusals(
            lambda host, reason, count: on_event(Refused(remote=host, reason=reason,
                                                         count=count)))
        device = options.peer.device_id
        self.watch = TrustWatch(store, self.connections, self.refusals,
                                lambda paired: paired & {device}, ending=self._ending)
        self.ids = itertools.count(1)
        self.candidates = list(options.candidates)
        self.discover = options.discover
        self.noted: Candidate | None = None
        self.lock = threading.Lock()
        self.truth = FarEnd(self.options, self.store, self._open, on_event)
        self.route = PeerRoute(
            store, options.peer, discovery_timeout=options.discovery_timeout,
            interfaces=options.interfaces,
            on_announced=lambda found: on_event(Announced(peer=options.peer,
                                                          addresses=found)),
        ) if options.follow else None

    def _connect(self, deadline: float) -> tuple[TlsLink, Peer, Candidate]:
        """Its addresses first; with a relay, after RELAY_DELAY (or once they failed)
        its `tunnel serve --relay` through the relay (docs/RELAY.md)."""
        relay = self.options.relay
        if relay is None:
            return self._direct(deadline, self._plan())
        plan = self._plan()
        if plan[0]:  # an address to try first
            with contextlib.suppress(CertpairError):
                return self._direct(min(deadline, time.monotonic() + RELAY_DELAY), plan)
        fingerprints = meeting_fingerprints(self.options.peer, self.store)
        # A handshake cut short (a squatter glued first, or the relay cut it) is tried
        # again at another slot, at most CUT_TRIES in all, as ping and sync do.
        for tries in range(1, CUT_TRIES + 1):
            sock = dial_relayed(self.options.peer, "tunnel", relay,
                                max(0.1, deadline - time.monotonic()),
                                fingerprints=fingerprints)
            try:
                return self._handshake(Reached(sock=sock, candidate=Candidate(
                    host=relay.host, port=relay.port, source="relay", kind=RELAYED)),
                    deadline)
            except NetworkError:  # cut: not a refusal (NotPaired), not a timeout
                if tries == CUT_TRIES or time.monotonic() >= deadline:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def _plan(self) -> tuple[list[Candidate], Discover | None]:
        if self.route is not None:
            return self.route.plan()
        options = self.options
        with self.lock:
            candidates, discover = list(self.candidates), self.discover
        if not candidates and options.host:
            candidates = [Candidate(host=options.host, port=options.port, source=options.source)]
        return candidates, discover

    def _direct(self, deadline: float, plan: tuple[list[Candidate], Discover | None],
                ) -> tuple[TlsLink, Peer, Candidate]:
        """Race the far end's addresses; another device answering at one only moves the
        race on (said once PEER answered). Without a route, the winner goes first for
        the next connection."""
        candidates, discover = plan
        passed: list[str] = []
        try:
            found = reach(self.options.peer.name, candidates,
                          lambda reached: self._handshake(reached, deadline),
                          timeout=max(0.1, deadline - time.monotonic()), discover=discover,
                          passed=passed)
        except CertpairError:
            if self.route is not None:
                self.route.ended(reached=False)
            with self.lock:  # moved again? the next connection looks again
                self.discover = self.options.discover
            raise
        used = found[2]
        if self.route is not None:
            self.route.ended(reached=True)
        with self.lock:
            if self.candidates:
                self.candidates = [used, *(c for c in self.candidates if c != used)]
            self.discover = None  # found: no more lookups on every connection
        for line in passed:
            self.on_event(PassedOver(peer=self.options.peer, reason=line))
        return found

    def _must_tell(self, key_sync: KeySync) -> bool:
        """Whether this device has a rotation PEER has not acknowledged (one ``stat``
        when no rotation is pending: no store read on the connection's path)."""
        return key_sync.to_tell(self.options.peer, self.store)

    def _ending(self, paired: frozenset[str]) -> str | None:
        if self.options.peer.device_id in paired:
            return None
        return f"{self.options.peer.name} is no longer paired on this device (unpaired here)"

    def _fail(self, local: socket.socket, remote: str, reason: str) -> None:
        reset(local)
        with contextlib.suppress(Exception):
            self.store.record_event(kind="connection", role=_ROLE, remote=self.remote,
                                    mode="mtls", outcome="failed", reason=reason,
                                    peer_fingerprint=self.options.peer.fingerprint,
                                    peer_name=self.options.peer.name)
        self.on_event(Failed(remote=remote, reason=reason, peer=self.options.peer))

    def _open(self, deadline: float, intent: Intent = Intent.DATA
              ) -> tuple[TlsLink, Peer, Candidate]:
        """Connect, handshake and check the far end (raises a CertpairError); with the
        preamble, the intent byte goes out with the first data."""
        link, peer, used = self._connect(deadline)
        with self.lock:  # a store write only when the address that answers changes
            changed, self.noted = self.noted != used, used
        if changed:  # through a relay: a "via relay R" entry, never a host to dial
            with contextlib.suppress(CertpairError):  # the address book is only a hint
                self.store.note_address(peer, used.host, used.port, service=TUNNEL,
                                        source=CONTACT, kind=used.kind)
            if self.route is not None:
                self.route.changed()
        if speaks_preamble(link):
            link.tls.write(bytes([intent]))
        return link, peer, used

    def _handshake(self, reached: Reached, deadline: float
                   ) -> tuple[TlsLink, Peer, Candidate]:
        """TLS on a connected socket, and the check that PEER answered (OtherDevice when
        another device did: the race goes on)."""
        options = self.options
        raw, used = reached.sock, reached.candidate
        link = TlsLink(raw, self.context, server_side=False)
        try:
            link.handshake(deadline)
            check_service(link.tls, ALPN_TUNNEL, self.remote)  # e.g. the device's serve port
            peer = admitted_peer(link.tls)  # admitted in the handshake: no store read
            # The context is pinned to PEER already; this check does not depend on it.
            if peer.device_id != options.peer.device_id:
                raise NotPaired(explain_certificate(self.store, peer.fingerprint,
                                                    expected=options.peer))
        except (OSError, ssl.SSLError, CertpairError) as exc:
            raw.close()
            relayed = used.kind == RELAYED
            # Through a relay, its address is not the device's: named as the relay, and
            # never connected to for a second look (whatever answered there, the relay).
            where = f"relay {options.relay}" if relayed else str(used)
            who = f"the device reached through the {where}" if relayed else where
            if isinstance(exc, PeerRefused | NotPaired):
                why = exc.verify_message if isinstance(exc, PeerRefused) else str(exc)
                raise OtherDevice(_at(who, why)) from exc
            if isinstance(exc, ssl.SSLCertVerificationError):
                der = _presented(link) or (
                    b"" if relayed else _peek_certificate(used.host, used.port, deadline))
                why = (explain_certificate(self.store, fingerprint(der), expected=options.peer)
                       if der else f"not {options.peer.name}: it presents a certificate that "
                       f"is none of {options.peer.name}'s ({exc.verify_message})")
                raise OtherDevice(_at(who, why)) from exc
            raise connection_error(exc, where) from exc
        return link, peer, used

    def handle(self, local: socket.socket, remote: str) -> Closed | None:
        """One local connection, carried to the device (runs in its own thread)."""
        options = self.options
        arm_reset(local)  # killed from here on, the client sees a reset, not an EOF
        with contextlib.suppress(OSError):
            local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if options.key_sync is not None and self._must_tell(options.key_sync):
            self.truth.sync()  # this device's rotation, before its new key is needed
        try:
            link, peer, used = self._open(time.monotonic() + options.connect_timeout)
        except CertpairError as exc:
            self._fail(local, remote, str(exc))
            return None
        relay = Relay(link, idle_timeout=options.idle_timeout,
                      half_close_timeout=options.half_close_timeout)
        # The far end answered: it accepted this device's certificate.
        relay.on_data = lambda: settle_pairing(self.store, peer, self.remote)
        if speaks_preamble(link):
            relay.on_status = self.truth.on_status
        tracked = self.connections.track(peer.device_id, relay)
        try:
            if not self.watch.admits(peer.device_id) or not relay.attach(local, armed=True):
                relay.close(clean=False)
                return None
            conn_id = next(self.ids)
            self.on_event(Opened(id=conn_id, remote=remote, peer=peer, far=str(used),
                                 far_from=used.source))
            start = time.monotonic()
            reason = self.truth.of_end(relay.run(), relay)
            return Closed(id=conn_id, remote=remote, peer=peer, bytes_up=relay.sent,
                          bytes_down=relay.received, duration=time.monotonic() - start,
                          reason=reason)
        finally:
            self.connections.untrack(tracked)


def _at(remote: str, why: str) -> str:
    """``HOST:PORT is not alpha: …`` or ``HOST:PORT: alpha presents …``."""
    return f"{remote} is {why}" if why.startswith("not ") else f"{remote}: {why}"


def _peek_certificate(host: str, port: int, deadline: float) -> bytes:
    """The far end's certificate, read on a second connection that verifies nothing and
    presents nothing (after a refused certificate only: to say whose it is)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(alpn_offer(ALPN_TUNNEL))
    try:
        timeout = max(0.1, min(2.0, deadline - time.monotonic()))
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True) or b""
    except (OSError, ValueError):
        return b""


def _presented(link: TlsLink) -> bytes:
    """The far end's certificate, if the handshake got that far."""
    try:
        return link.tls.getpeercert(binary_form=True) or b""
    except ValueError:
        return b""


def connect_tunnel(options: ConnectOptions, on_event: OnEvent, *,
                   listener: socket.socket | None = None,
                   ready: Callable[[], None] | None = None) -> None:
    """Run ``tunnel connect`` until SIGINT/SIGTERM (in the main thread).

    Args:
        options: the peer, where it is, the local listen address, limits.
        on_event: receives every :mod:`~certpair.tunnel.events` event, from any thread.
        listener: a listening socket to use instead of binding the listen address.
        ready: called once listening (after the :class:`Listening` event).

    Raises:
        NotInitialised, LocalStateError: no identity, or the store is unusable.
        NetworkError: cannot listen.
        NotPaired: PEER was unpaired on this device while the tunnel ran (it stopped).
    """
    with open_store(options.home) as store:
        client = _Client(options, store, on_event)
        sock = listener or listen(options.listen_host, options.listen_port)
        host, port = sock.getsockname()[:2]
        on_event(Listening(host=str(host), port=int(port), details={
            "peer": {"name": options.peer.name, "fingerprint": options.peer.fingerprint},
            "remote": client.remote, "address_from": options.source}))
        if ready is not None:
            ready()
        if client.route is not None:
            client.route.start()
        try:
            run_acceptor(sock, client.handle, connections=client.connections,
                         refusals=client.refusals, watch=client.watch, on_event=on_event,
                         drain_timeout=options.drain_timeout)
        finally:
            if client.route is not None:
                client.route.close()
        if client.watch.ended is not None:
            raise NotPaired(f"{client.watch.ended}: the tunnel stopped")
