"""One ``tunnel serve`` connection, from accept to close (:class:`TunnelServer`).

In order: the TLS handshake (the context admits paired devices only), the peer
admitted in it checked against ``--allow``, and only then a connection to the service;
so a device that is not let through never makes a single byte reach the service. With
the preamble (tunnel/preamble.py) the client's intent byte comes first: a CHECK is
answered, a SYNC carried, and DATA goes on. Then the PROXY v2 header if asked for,
the status byte, the relay, and the connection's audit row, written in batches.
``tunnel serve`` itself (listening, DNS-SD, the relay feed) is tunnel/serve.py.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from certpair.addresses import host_of
from certpair.errors import CertpairError
from certpair.ports import ALPN_TUNNEL
from certpair.relay import RelayAddress
from certpair.store import Event, Peer, TrustStore
from certpair.store.records import iso_time
from certpair.trusted import (
    NotPaired,
    PeerRefused,
    admitted_peer,
    peer_of,
    refusal_reason,
    server_context,
)
from certpair.trusted.handshakes import DEADLINE, HandshakeSlots, Slot
from certpair.tunnel.events import (
    Closed,
    Failed,
    OnEvent,
    Opened,
    Refused,
    Synced,
)
from certpair.tunnel.link import TlsLink, wait_for
from certpair.tunnel.preamble import (
    ROTATION_FLAG,
    Intent,
    KeySync,
    LinkStream,
    Status,
    read_exactly,
    speaks_preamble,
)
from certpair.tunnel.proxy_v2 import encode_header
from certpair.tunnel.pump import HALF_CLOSE_TIMEOUT, Relay, arm_reset
from certpair.tunnel.targets import Target
from certpair.tunnel.watch import Connections, Refusals, TrustWatch, settle_pairing

__all__ = ["PROBE", "ServeOptions", "TunnelServer"]

_ROLE = "tunnel-server"
# Counted like refusals: a handshake, then nothing asked (no service was connected to).
PROBE = "probe: the client closed without asking for anything"
_CLOSING = 2.0
_RECORD = 16384


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """What ``tunnel serve`` was asked to do.

    ``allow`` holds the device ids of the only peers let through (None: every paired
    device): a device id survives the peer's key rotations (store/devices.py).
    ``advertise`` publishes the tunnel with DNS-SD. Timeouts are in seconds;
    ``idle_timeout`` and ``half_close_timeout`` None never time out. ``key_sync``
    carries the key-rotation sync over the tunnel (tunnel/preamble.py; None: not).
    """

    home: Path
    target: Target
    host: str
    port: int
    allow: frozenset[str] | None = None
    proxy_protocol: bool = False
    advertise: bool = False
    max_connections: int = 1000
    connect_timeout: float = 10.0
    idle_timeout: float | None = None
    half_close_timeout: float | None = HALF_CLOSE_TIMEOUT
    drain_timeout: float = 10.0
    key_sync: KeySync | None = None
    relay: RelayAddress | None = None  # also wait for devices at this relay


class TunnelServer:
    """``tunnel serve``'s connections: :meth:`handle` runs one, in its own thread;
    the limits, refusals, trust watch and audit rows they share live here."""

    def __init__(self, options: ServeOptions, store: TrustStore, on_event: OnEvent) -> None:
        self.options, self.store, self.on_event = options, store, on_event
        self.context = server_context(options.home)
        # A joiner or a ping that reached this port by mistake learns it from ALPN at once
        # (docs/PROTOCOL.md §2); clients offering no ALPN are served as before.
        # On certpair/1-tunnel the preamble tells the connecting side the truth.
        self.context.set_alpn_protocols([ALPN_TUNNEL])
        self.connections = Connections(options.max_connections)
        # Unpaired hosts' idle sockets wait here, never in --max-connections.
        self.handshakes = HandshakeSlots(deadline=min(options.connect_timeout, DEADLINE))
        self.refusals = Refusals(self._report_refused)
        self.watch = TrustWatch(store, self.connections, self.refusals, self._allowed,
                                tick=self.flush_log)
        self.ids = itertools.count(1)
        self._log: list[Event] = []
        self._seen: dict[str, tuple[Peer, str]] = {}
        self._hosts: dict[str, str] = {}  # the host each peer was last noted at
        self._log_lock = threading.Lock()

    def flush_log(self) -> None:
        """Write the connection rows logged since the last flush, in one transaction
        (one commit per connection was ~10 % of a short connection's CPU)."""
        with self._log_lock:
            rows, self._log = self._log, []
            seen, self._seen = self._seen, {}
        if rows or seen:
            with contextlib.suppress(Exception):
                self.store.record_contacts(rows, list(seen.values()))

    def _allowed(self, paired: frozenset[str]) -> frozenset[str]:
        """The device ids let through, of the paired ones."""
        allow = self.options.allow
        return paired if allow is None else paired & allow

    def _report_refused(self, host: str, reason: str, count: int) -> None:
        with contextlib.suppress(Exception):
            self.store.record_refusal(kind="connection", role=_ROLE, remote=host,
                                      mode="mtls", reason=reason, count=count)
        self.on_event(Refused(remote=host, reason=reason, count=count))

    def _refuse(self, link: TlsLink, remote: str, reason: str,
                status: Status | None = None, *, slot: Slot | None = None) -> None:
        self.refusals.add(host_of(remote), reason)
        if status is not None and speaks_preamble(link):
            _answer(link, status)  # the refused device learns why (tunnel/preamble.py)
        link.linger_close(slot.leave if slot is not None else None)

    def handle(self, sock: socket.socket, remote: str) -> Closed | None:
        """One connection, from handshake to close (runs in its own thread).

        Its unproven slot (see :mod:`certpair.trusted.handshakes`) is left once the peer
        is known and allowed; it takes one of ``--max-connections`` then.
        """
        slot = self.handshakes.slot_for(sock)
        options = self.options
        deadline = time.monotonic() + options.connect_timeout
        try:
            link = TlsLink(sock, self.context, server_side=True)
        except OSError:
            if slot is not None:
                slot.leave()
            sock.close()
            return None
        try:
            link.handshake(deadline)
        except (OSError, ssl.SSLError) as exc:
            # A device refused after OpenSSL's handshake gets no alert: tell it instead.
            refused = Status.NOT_PAIRED if isinstance(exc, PeerRefused) else None
            self._refuse(link, remote, _why(slot, exc), refused, slot=slot)
            return None
        try:
            # certpair.trusted admits a connection's peer once, in its handshake (one
            # store read, the one flagged-peer rule); here it is only looked up.
            peer = admitted_peer(link.tls)
        except NotPaired as exc:
            self._refuse(link, remote, _why(slot, exc), slot=slot)
            return None
        relay = Relay(link, idle_timeout=options.idle_timeout,
                      half_close_timeout=options.half_close_timeout)
        # Tracked: an unpairing from now on cuts it.
        tracked = self.connections.track(peer.device_id, relay)
        try:
            if self.watch.version != getattr(link.tls.context, "peers_version", -1):
                # The peers changed after the admission, and the watch may have looked
                # before this connection was tracked: ask the store again (rare).
                try:
                    peer = peer_of(link.tls)
                except NotPaired as exc:
                    self._refuse(link, remote, _why(slot, exc), Status.NOT_PAIRED, slot=slot)
                    return None
            if not self._allowed(frozenset({peer.device_id})):
                self._refuse(link, remote, "not allowed by --allow", Status.NOT_ALLOWED,
                             slot=slot)
                return None
            if slot is not None:  # proven: from here on an authenticated connection
                slot.prove()
                if not self.connections.take_slot():
                    self._refuse(link, remote, "too many connections")
                    return None
            try:
                # Confirmed once the client sends data over the accepted connection, not
                # at its handshake: a client may complete that and then reject this device.
                relay.on_data = lambda: settle_pairing(self.store, peer, remote)
                host = host_of(remote)
                with self._log_lock:  # where it was seen, when that changes: with the log
                    if self._hosts.get(peer.fingerprint) != host:
                        self._hosts[peer.fingerprint] = host
                        self._seen[peer.fingerprint] = (peer, host)
                if speaks_preamble(link) and not self._intent_is_data(link, remote, peer,
                                                                      deadline):
                    return None
                return self._carry(relay, remote, peer, deadline)
            finally:
                if slot is not None:
                    self.connections.release_slot()
        finally:
            self.connections.untrack(tracked)

    def _carry(self, relay: Relay, remote: str, peer: Peer, deadline: float) -> Closed | None:
        options = self.options
        try:
            plain = self._dial(relay, peer, deadline)
        except OSError as exc:
            if speaks_preamble(relay.link):  # "service unavailable", not "done"
                relay.link.tls.write(bytes([Status.SERVICE_UNAVAILABLE]))
            _close_notify(relay.link)
            self.on_event(Failed(remote=remote, peer=peer, reason=(
                f"the service {options.target} is unreachable: {exc.strerror or exc}")))
            return None
        if not relay.attach(plain, armed=True):  # by _dial
            relay.close(clean=False)
            return None
        if speaks_preamble(relay.link):
            sync = options.key_sync
            rotation = sync is not None and sync.to_tell(peer, self.store)
            relay.link.tls.write(bytes([Status.READY | (ROTATION_FLAG if rotation else 0)]))
        conn_id = next(self.ids)
        self.on_event(Opened(id=conn_id, remote=remote, peer=peer))
        start = time.monotonic()
        reason = relay.run()
        # Logged at the end, and written by the watch within POLL_INTERVAL with the
        # others ended since: a commit of its own would add to every connection.
        # A handshake and nothing sent is a probe (a client that rejected this device, or
        # one of another kind that saw this port's ALPN name), not a connection.
        outcome = "accepted" if relay.received else "probe"
        row = Event(at=iso_time(time.time()), kind="connection", role=_ROLE, remote=remote,
                    mode="mtls", outcome=outcome, reason=reason, peer_name=peer.name,
                    peer_fingerprint=peer.fingerprint)
        with self._log_lock:
            self._log.append(row)
        return Closed(id=conn_id, remote=remote, peer=peer, bytes_up=relay.received,
                      bytes_down=relay.sent, duration=time.monotonic() - start, reason=reason)


    def _intent_is_data(self, link: TlsLink, remote: str, peer: Peer,
                        deadline: float) -> bool:
        """Read the client's intent byte; serve a CHECK or a SYNC here (False: done)."""
        try:
            intent = read_exactly(link, 1, deadline)
        except (OSError, ssl.SSLError):
            intent = b""
        if not intent:  # a client of another kind (ping at this port), or one that left
            self.refusals.add(host_of(remote), PROBE)
            link.sock.close()
            return False
        # Data over the accepted connection: the client accepted this device (issue 19).
        settle_pairing(self.store, peer, remote)
        if intent == bytes([Intent.DATA]):
            return True
        sync = self.options.key_sync
        if intent != bytes([Intent.SYNC]) or sync is None:
            _answer(link, Status.READY)  # CHECK: the device is let through, nothing more
            link.linger_close()
            return False
        link.tls.write(bytes([Status.READY]))
        stream = LinkStream(link, deadline)
        try:
            told, heard = sync.run(stream.recv, stream.send, peer,
                                   link.tls.getpeercert(binary_form=True) or b"",
                                   self.store, remote)
        except (CertpairError, OSError) as exc:
            self.on_event(Synced(remote=remote, peer=peer, error=str(exc)))
            link.sock.close()
            return False
        if told is not None or heard is not None:
            self.on_event(Synced(remote=remote, peer=peer, told=told, heard=heard))
        _close_notify(link)
        return False

    def _dial(self, relay: Relay, peer: Peer, deadline: float) -> socket.socket:
        """Connect to the service and send the PROXY header if asked for."""
        plain = self.options.target.dial(max(0.1, deadline - time.monotonic()))
        arm_reset(plain)  # killed from here on, the service sees a reset, not an EOF
        if self.options.proxy_protocol:
            try:
                plain.sendall(encode_header(
                    relay.link.sock.getpeername()[:2], relay.link.sock.getsockname()[:2],
                    fingerprint=peer.fingerprint, peer_name=peer.name))
            except OSError:
                plain.close()
                raise
        return plain


def _answer(link: TlsLink, status: Status) -> None:
    """Write a status byte and close_notify (sent by the close that follows)."""
    with contextlib.suppress(OSError, ssl.SSLError):
        link.tls.write(bytes([status]))
        with contextlib.suppress(ssl.SSLWantReadError):
            link.tls.unwrap()


def _why(slot: Slot | None, error: Exception) -> str:
    """Why a handshake failed: its slot's cut (displaced, expired), else the error."""
    return (slot.reason if slot is not None else None) or refusal_reason(error)


def _close_notify(link: TlsLink) -> None:
    """End a connection cleanly: close_notify, then read and drop what the client still
    sends until its own close (at most :data:`_CLOSING` seconds). The client sees an
    EOF, even one that had already sent bytes (docs/TUNNEL.md, "Service down")."""
    deadline = time.monotonic() + _CLOSING
    with contextlib.suppress(OSError, ssl.SSLError):
        _drop_received(link)  # records already here would make the close fail
        with contextlib.suppress(ssl.SSLWantReadError):
            link.tls.unwrap()
        link.flush(deadline)
        link.sock.shutdown(socket.SHUT_WR)
        while not link.raw_eof:
            wait_for(link.sock, select.POLLIN, deadline)
            link.receive()
            link.incoming.read()  # dropped: there is nobody to give it to
    link.sock.close()


def _drop_received(link: TlsLink) -> None:
    """Read and drop the application data received so far (bytes the client sent
    after its handshake, for a service that cannot be reached)."""
    while True:
        try:
            while link.tls.read(_RECORD):
                pass
            return
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return
        if not link.receive():  # nothing more for now
            return
