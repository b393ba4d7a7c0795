"""``certpair serve``'s server: trusted connections from paired devices, each answered
and logged, reported as events (the CLI renders them: ``cli/serve_cmd.py``).

Each accepted connection gets, for every line it sends, one JSON line naming this
device and the peer; an HTTP request line gets the same JSON as an HTTP response, so
``curl`` works too; the sync request line (:data:`~certpair.rotation.exchange.SYNC_REQUEST`)
switches the connection to the key-rotation sync (docs/PROTOCOL.md §8). Every
connection is logged in the events table: each accepted one as a row, refusals counted
per source host, reason and minute. A thread serves each connection
(:func:`certpair.trusted.make_server`: unproven connections in slots of their own,
then at most 256 at once); the blocking ``ssl`` module, unlike asyncio, sends the TLS
alert when it refuses a certificate, so the refused side learns why. Reporting never
blocks: ``on_event`` must return at once (the CLI queues for its one writer).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import TYPE_CHECKING

from certpair.addresses import format_address
from certpair.announce import Advertised
from certpair.errors import CertpairError, LocalStateError
from certpair.identity import Identity
from certpair.ports import ALPN_SERVE, SERVE_PORT
from certpair.rotation.exchange import SYNC_REQUEST, SyncOutcome, run_sync
from certpair.store import Peer, TrustStore
from certpair.trusted import make_server, presented_fingerprint, server_context

if TYPE_CHECKING:
    from certpair.announce import Advertisement
    from certpair.relay import RelayAddress
    from certpair.relay.serving import RelayServing
    from certpair.trusted.server import TrustedServer

__all__ = [
    "IDLE_TIMEOUT",
    "Advertised",
    "Confirmed",
    "Connection",
    "Listening",
    "Probe",
    "RelayStatus",
    "ServeEvent",
    "StoreProblem",
    "Synced",
    "serve",
]

IDLE_TIMEOUT = 30.0
# Refusals of relayed connections: the first of each reason is said at once, the rest
# counted and said once per this many seconds (a relay can glue anyone, any number).
RELAY_REFUSAL_WINDOW = 60.0
MAX_LINES = 1000
MAX_LINE = 8192
MAX_HEADERS = 100
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")


@dataclass(frozen=True, kw_only=True)
class Listening:
    """Serving on ``host:port``."""

    host: str
    port: int


@dataclass(frozen=True, kw_only=True)
class Connection:
    """A connection let through (``peer``), or refused (None, ``reason`` says why);
    refusals of connections glued at a relay are counted: ``count`` of them since the
    last report (:data:`RELAY_REFUSAL_WINDOW`)."""

    remote: str
    peer: Peer | None
    reason: str = ""
    count: int = 1


@dataclass(frozen=True, kw_only=True)
class Probe:
    """A paired device completed the handshake and sent nothing (no connection, no
    confirmation: it may have rejected this device after its handshake)."""

    remote: str
    peer: Peer


@dataclass(frozen=True, kw_only=True)
class Confirmed:
    """An unconfirmed pairing was settled: ``peer`` has shown it trusts this device."""

    peer: Peer


@dataclass(frozen=True, kw_only=True)
class StoreProblem:
    """The store could not be written (said once per cause); serving goes on."""

    problem: str


@dataclass(frozen=True, kw_only=True)
class Synced:
    """A rotation sync a peer asked for: its ``outcome``, or the ``error`` it ended in."""

    remote: str
    outcome: SyncOutcome | None
    error: Exception | None = None


@dataclass(frozen=True, kw_only=True)
class RelayStatus:
    """``serve --relay``: connections wait at ``relay`` (``waiting``), or it failed
    (``reason``) and is tried again in ``retry_in`` seconds (docs/RELAY.md)."""

    relay: str
    waiting: bool
    reason: str = ""
    retry_in: float = 0.0


ServeEvent = (Listening | Advertised | Connection | Probe | Confirmed | StoreProblem | Synced
              | RelayStatus)


def _address(tls: ssl.SSLSocket) -> str:
    host, port = tls.getpeername()[:2]
    return format_address(host, port)


class _Server:
    def __init__(self, home: Path, identity: Identity, store: TrustStore,
                 on_event: Callable[[ServeEvent], None]) -> None:
        self.home, self.identity, self.store, self.on_event = home, identity, store, on_event
        self.store_failures: set[str] = set()
        self.hosts: dict[str, str] = {}  # the host each peer was last noted at
        self.port = 0  # the listening port: a connection on another one came via the relay
        self.relay: RelayAddress | None = None
        self._relayed_lock = threading.Lock()
        self._relayed_since: dict[str, float] = {}  # reason: when its window began
        self._relayed_pending: dict[str, int] = {}  # reason: refusals not said yet

    def log(self, write: Callable[[], object]) -> None:
        """Write to the store; a failure is said once per cause, and serving goes on."""
        try:
            write()
        except LocalStateError as exc:
            if str(exc) not in self.store_failures:
                self.store_failures.add(str(exc))
                self.on_event(StoreProblem(problem=str(exc)))

    def refused(self, remote: str, reason: str) -> None:
        if reason == "the other device does not trust this one":
            # The client did not send its certificate, so which device it was is
            # unknown; an unconfirmed pairing here is the likely story.
            # A bounded read: any unpaired client can make this happen, on a hub too.
            try:
                waiting = [p.name for p in self.store.unconfirmed_peers(limit=5)]
            except LocalStateError:
                waiting = []
            if waiting:
                reason += (f" (unconfirmed here: {', '.join(waiting)}; if it was one of "
                           "them, its pairing did not complete there: pair again)")
        # One row per source, reason and minute (store/events.py).
        self.log(lambda: self.store.record_refusal(
            kind="connection", role="server", remote=remote, mode="mtls", reason=reason))
        if remote.startswith("relay "):
            with self._relayed_lock:
                first = reason not in self._relayed_since
                if first:
                    self._relayed_since[reason] = time.monotonic()
                else:
                    self._relayed_pending[reason] = self._relayed_pending.get(reason, 0) + 1
            if not first:
                return  # counted: said by flush_relayed()
        self.on_event(Connection(remote=remote, peer=None, reason=reason))

    def flush_relayed(self, *, everything: bool = False) -> None:
        """Say the relayed refusals counted in windows that ended."""
        now = time.monotonic()
        with self._relayed_lock:
            ended = [r for r, t in self._relayed_since.items()
                     if everything or now - t >= RELAY_REFUSAL_WINDOW]
            counts = [(r, self._relayed_pending.pop(r, 0)) for r in ended]
            for reason in ended:
                del self._relayed_since[reason]
        for reason, count in counts:
            if count:
                self.on_event(Connection(remote=f"relay {self.relay}", peer=None,
                                         reason=reason, count=count))

    def handle(self, tls: ssl.SSLSocket, peer: Peer) -> None:
        host = str(tls.getpeername()[0])
        remote = _address(tls)
        if self.relay is not None and tls.getsockname()[1] != self.port:
            remote = f"relay {self.relay}"  # glued at the relay: not the peer's address
        elif self.hosts.get(peer.fingerprint) != host:  # where it is seen, when that changes
            self.hosts[peer.fingerprint] = host
            self.log(lambda: self.store.note_address(peer, host))
        answer = json.dumps(
            # The certificate this connection presented (rotate --finish switches live).
            {"name": self.identity.name, "fingerprint": presented_fingerprint(tls),
             "peer": peer.name, "peer_fingerprint": peer.fingerprint}, ensure_ascii=False,
        ).encode() + b"\n"
        # The socket carries IDLE_TIMEOUT: every read below ends by then.
        with contextlib.suppress(OSError), tls.makefile("rb") as reader:
            try:
                line = reader.readline(MAX_LINE)
            except OSError:
                line = b""
            if not line:
                # A handshake, then nothing: a client that rejected this device after
                # its handshake, or one of another kind that saw the ALPN name and left
                # (docs/PROTOCOL.md §2). Neither is a connection, nor a confirmation.
                self.probe(remote, peer)
                return
            self.accepted(remote, peer)
            for number in range(MAX_LINES):
                if number:
                    line = reader.readline(MAX_LINE)
                if not line.endswith(b"\n"):
                    return  # closed, or a line too long
                if line == SYNC_REQUEST:
                    self.sync(tls, reader, peer, remote)
                    return
                if number == 0 and _HTTP_REQUEST.fullmatch(line):
                    for _ in range(MAX_HEADERS):
                        if not reader.readline(MAX_LINE).strip():
                            break
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                % (len(answer), answer))
                    return
                tls.sendall(answer)

    def accepted(self, remote: str, peer: Peer) -> None:
        """The client sent its first bytes over the accepted connection."""
        if not peer.confirmed:
            # Application data from the client: its TLS stack accepted this device's
            # certificate and it went on to use the connection, so it trusts this device.
            # (Its handshake completing is not enough: a client may finish the handshake
            # whatever it thinks of the certificate, and then hang up.)
            self.log(lambda: self.store.confirm_peer(peer.fingerprint, remote=remote,
                                                     reason="trusted connection (serve)"))
            self.on_event(Confirmed(peer=peer))
        self.log(lambda: self.store.record_event(
            kind="connection", role="server", remote=remote, mode="mtls",
            outcome="accepted", reason="", peer_fingerprint=peer.fingerprint,
            peer_name=peer.name))
        self.on_event(Connection(remote=remote, peer=peer))

    def probe(self, remote: str, peer: Peer) -> None:
        """A paired device's handshake, then no request: counted as refusals are."""
        reason = f"probe: {peer.name} ({peer.fingerprint}) completed the handshake, sent nothing"
        self.log(lambda: self.store.record_refusal(
            kind="connection", role="server", remote=remote, mode="mtls", outcome="probe",
            reason=reason))
        self.on_event(Probe(remote=remote, peer=peer))

    def sync(self, tls: ssl.SSLSocket, reader: BufferedReader, peer: Peer,
             remote: str) -> None:
        """Run the rotation sync the peer asked for (docs/PROTOCOL.md §8), then report."""
        peer_cert = tls.getpeercert(binary_form=True) or b""
        try:
            # read1: the bytes that followed the sync line are already in the buffer.
            outcome = run_sync(reader.read1, tls.sendall, peer=peer, peer_cert=peer_cert,
                               home=self.home, store=self.store, remote=remote,
                               initiator=False)
        except (CertpairError, OSError) as exc:  # a cut mid-sync too: reported
            self.on_event(Synced(remote=remote, outcome=None, error=exc))
        else:
            self.on_event(Synced(remote=remote, outcome=outcome))


def serve(home: Path, identity: Identity, store: TrustStore, *, host: str = "0.0.0.0",  # noqa: S104  # peers are other devices
          port: int = SERVE_PORT, advertise: bool = True,
          relay: RelayAddress | None = None,
          on_event: Callable[[ServeEvent], None]) -> None:
    """Serve paired devices on ``host:port`` until interrupted (KeyboardInterrupt).

    Args:
        home: certpair's home directory.
        identity: this device.
        store: its trust store (connections and refusals are logged there).
        host: address to listen on.
        port: TCP port; 0 picks a free one (reported in :class:`Listening`).
        advertise: announce this serve on the local network (DNS-SD, name and
            fingerprint), unless it listens on loopback only.
        relay: also keep connections waiting at this transit relay, for paired devices
            that cannot reach this one directly (docs/RELAY.md); mutual TLS decides
            who gets in, under the same limits as the listening port.
        on_event: receives every :data:`ServeEvent`, from any thread; must not block.

    Raises:
        NetworkError: cannot listen.
    """
    server = _Server(home, identity, store, on_event)
    context = server_context(home)
    # A joiner or a tunnel client that reached this port by mistake learns it from ALPN
    # at once; clients that offer no ALPN (curl, openssl) are served as before.
    context.set_alpn_protocols([ALPN_SERVE])
    with make_server(server.handle, host, port, home, context=context, timeout=IDLE_TIMEOUT,
                     on_refused=server.refused) as listener:
        bound = int(listener.server_address[1])
        server.port, server.relay = bound, relay
        on_event(Listening(host=host, port=bound))
        advertisement = (_advertise(home, identity, host, bound, on_event) if advertise
                         else None)
        waiting = None if relay is None else _wait_at(relay, identity, server, listener,
                                                       on_event)
        try:
            listener.serve_forever()
        finally:
            if waiting is not None:
                waiting.stop()
                server.flush_relayed(everything=True)
            if advertisement is not None:
                advertisement.close()


def _wait_at(relay: RelayAddress, identity: Identity, server: _Server,
             listener: TrustedServer, on_event: Callable[[ServeEvent], None]) -> RelayServing:
    """Connections waiting at ``relay``, each glued one taken in as an accepted one,
    under its label ``relay tcp:R:P`` and a budget of unproven slots of its own (one per
    waiting connection: never any address's), its refusals counted."""
    from certpair.relay.serving import RelayServing, own_fingerprints  # noqa: PLC0415

    def status(waiting: bool, reason: str, retry_in: float) -> None:
        on_event(RelayStatus(relay=str(relay), waiting=waiting, reason=reason,
                             retry_in=retry_in))

    serving = RelayServing(
        relay=relay, fingerprint=own_fingerprints(identity.home), service="serve",
        hand_over=lambda sock, remote, settle: listener.process_relayed(
            sock, remote, settle, budget=len(serving.tokens)),
        on_status=status)
    serving.start()

    def flush() -> None:
        while not serving.stopping.wait(RELAY_REFUSAL_WINDOW / 4):
            server.flush_relayed()

    threading.Thread(target=flush, daemon=True, name="certpair-relay-refusals").start()
    return serving


def _advertise(home: Path, identity: Identity, host: str, port: int,
               on_event: Callable[[ServeEvent], None]) -> Advertisement | None:
    """Announce this serve (name, fingerprint) with DNS-SD, in the background; not on a
    loopback-only listen address, where no other device could use it."""
    from certpair.announce import SERVE_SERVICE_TYPE, Advertisement  # noqa: PLC0415

    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    advertisement = Advertisement(service_type=SERVE_SERVICE_TYPE, name=identity.name,
                                  fingerprint=identity.fingerprint, port=port,
                                  listen_host=host, home=home)

    def publish() -> None:  # probing takes seconds: not in the way of serving
        advertisement.run(lambda problem, again: on_event(Advertised(problem=problem,
                                                                     again=again)))

    threading.Thread(target=publish, daemon=True, name="certpair-dnssd").start()
    return advertisement
