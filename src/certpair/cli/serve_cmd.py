"""``certpair serve``: accept trusted connections from paired devices.

Each accepted connection gets, for every line it sends, one JSON line naming this
device and the peer; an HTTP request line gets the same JSON as an HTTP response, so
``curl`` works too; a ``sync`` line switches the connection to the key-rotation sync
(docs/PROTOCOL.md §8). Every connection is logged in the events table: each accepted
one as a row, refusals counted per source host, reason and minute. A thread serves
each connection; the blocking ``ssl`` module, unlike asyncio, sends the TLS alert
when it refuses a certificate, so the refused side learns why.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from certpair.addresses import format_address
from certpair.cli.context import command_hint, home_of, identity_of, store_of
from certpair.cli.output import LineWriter
from certpair.cli.terminal import printable
from certpair.errors import LocalStateError
from certpair.ports import ALPN_SERVE, SERVE_PORT

if TYPE_CHECKING:
    import ssl
    from io import BufferedReader

    from certpair.announce import Advertisement
    from certpair.identity import Identity
    from certpair.store import Peer, TrustStore

__all__ = ["command"]

# Mirrors certpair.trusted.DEFAULT_SERVE_PORT (checked by a test), so that building the
# CLI does not import the TLS and crypto stack.
DEFAULT_SERVE_PORT = SERVE_PORT
IDLE_TIMEOUT = 30.0
MAX_LINES = 1000
MAX_LINE = 8192
MAX_HEADERS = 100
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")


class _Server:
    def __init__(self, home: Path, identity: Identity, store: TrustStore, as_json: bool) -> None:
        self.home = home
        self.identity = identity
        self.store = store
        self.as_json = as_json
        # Every line goes through the one writer: serving never waits on stdout.
        self.output = LineWriter(as_json=as_json)
        self.store_failures: set[str] = set()
        self.hosts: dict[str, str] = {}  # the host each peer was last noted at

    def log(self, write: Callable[[], object]) -> None:
        """Write to the store; a failure is said once per cause, and serving goes on."""
        try:
            write()
        except LocalStateError as exc:
            if str(exc) not in self.store_failures:
                self.store_failures.add(str(exc))
                self.note(f"Warning: {exc}; serving continues without logging")

    def report(self, remote: str, peer: Peer | None, reason: str) -> None:
        outcome = "accepted" if peer else "refused"
        if peer is None:  # one row per source, reason and minute (store/events.py)
            self.log(lambda: self.store.record_refusal(
                kind="connection", role="server", remote=remote, mode="mtls", reason=reason))
        else:
            self.log(lambda: self.store.record_event(
                kind="connection", role="server", remote=remote, mode="mtls",
                outcome=outcome, reason=reason, peer_fingerprint=peer.fingerprint,
                peer_name=peer.name,
            ))
        if self.as_json:
            self.output.put({"event": "connection", "remote": remote, "outcome": outcome,
                             "peer": {"name": peer.name, "fingerprint": peer.fingerprint}
                             if peer else None, "reason": reason})
        elif peer:
            self.output.put(f"Accepted {printable(peer.name)}  {peer.fingerprint}  from {remote}")
        else:
            self.output.put(f"Refused {remote}: {reason}")

    def note(self, text: str) -> None:
        self.output.put({"event": "note", "text": text} if self.as_json else text)

    def refused(self, remote: str, reason: str) -> None:
        if reason == "the other device does not trust this one":
            # The client did not send its certificate, so which device it was is
            # unknown; an unconfirmed pairing here is the likely story.
            # A bounded read: any unpaired client can make this happen, on a hub too.
            try:
                waiting = [printable(p.name) for p in self.store.unconfirmed_peers(limit=5)]
            except LocalStateError:
                waiting = []
            if waiting:
                reason += (f" (unconfirmed here: {', '.join(waiting)}; if it was one of "
                           "them, its pairing did not complete there: pair again)")
        self.report(remote, None, reason)

    def handle(self, tls: ssl.SSLSocket, peer: Peer) -> None:
        host, port = tls.getpeername()[:2]
        remote = format_address(host, port)
        if self.hosts.get(peer.fingerprint) != host:  # where it is seen, when that changes
            self.hosts[peer.fingerprint] = host
            self.log(lambda: self.store.note_address(peer, host))
        answer = json.dumps(
            {"name": self.identity.name, "fingerprint": _own_fingerprint(tls),
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
                if line == b"sync\n":
                    self.sync(tls, reader, peer)
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
            self.note(f"Pairing with {printable(peer.name)} confirmed: it trusts this "
                      "device too.")
        self.report(remote, peer, "")

    def probe(self, remote: str, peer: Peer) -> None:
        """A paired device's handshake, then no request: counted as refusals are."""
        reason = f"probe: {peer.name} ({peer.fingerprint}) completed the handshake, sent nothing"
        self.log(lambda: self.store.record_refusal(
            kind="connection", role="server", remote=remote, mode="mtls", outcome="probe",
            reason=reason))
        if self.as_json:
            self.output.put({"event": "connection", "remote": remote, "outcome": "probe",
                             "peer": {"name": peer.name, "fingerprint": peer.fingerprint},
                             "reason": "completed the handshake, sent nothing"})
        else:
            self.output.put(f"Probe from {printable(peer.name)}  {peer.fingerprint}  at "
                            f"{remote}: completed the handshake, sent nothing")

    def sync(self, tls: ssl.SSLSocket, reader: BufferedReader, peer: Peer) -> None:
        """Run the rotation sync the peer asked for (docs/PROTOCOL.md §8), then report."""
        from certpair.cli.sync_report import sync_lines  # noqa: PLC0415
        from certpair.errors import CertpairError  # noqa: PLC0415
        from certpair.rotation.exchange import run_sync  # noqa: PLC0415

        host, port = tls.getpeername()[:2]
        remote = format_address(host, port)
        peer_cert = tls.getpeercert(binary_form=True) or b""
        try:
            # read1: the bytes that followed the sync line are already in the buffer.
            outcome = run_sync(reader.read1, tls.sendall, peer=peer, peer_cert=peer_cert,
                               home=self.home, store=self.store, remote=remote,
                               initiator=False)
        except (CertpairError, OSError) as exc:
            lines = sync_lines(None, remote, self.as_json, error=exc)
        else:
            lines = sync_lines(outcome, remote, self.as_json, quiet=True)
        for line in lines:
            self.output.put(line)


def _own_fingerprint(tls: ssl.SSLSocket) -> str:
    """The certificate this connection presented (``rotate --finish`` switches it live)."""
    from certpair.trusted import presented_fingerprint  # noqa: PLC0415

    return presented_fingerprint(tls)


@click.command("serve", short_help="Accept mutual-TLS connections from paired devices.")
@click.option("--listen", "host", default="0.0.0.0", show_default=True,  # noqa: S104  # peers are other devices
              metavar="ADDR", help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_SERVE_PORT,
              show_default=True, metavar="PORT", help="TCP port; 0 picks a free one.")
@click.option("--no-advertise", is_flag=True,
              help="Do not publish _certpair-serve._tcp (name and fingerprint) with DNS-SD.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, host: str, port: int, no_advertise: bool,
            as_json: bool) -> None:
    """Accept mutual-TLS connections from paired devices; log each one.

    Each line a peer sends is answered with a JSON line naming both devices; a
    `sync` line runs the key-rotation sync (see `certpair rotate`). Unless it listens
    on loopback only, it announces itself on the local network (DNS-SD, name and
    fingerprint), so that peers find it by name after its address changed.

    \b
    Examples:
      certpair serve
      certpair serve --listen 127.0.0.1 --port 0 --json
    """
    from certpair.trusted import make_server, server_context  # noqa: PLC0415  # fast start-up

    home: Path = home_of(ctx)
    server = _Server(home, identity_of(ctx), store_of(ctx), as_json)
    context = server_context(home)
    # A joiner or a tunnel client that reached this port by mistake learns it from ALPN at
    # once; clients that offer no ALPN (curl, openssl) are served as before.
    context.set_alpn_protocols([ALPN_SERVE])
    with make_server(server.handle, host, port, home, context=context, timeout=IDLE_TIMEOUT,
                     on_refused=server.refused) as listener:
        bound = int(listener.server_address[1])
        where = format_address(host, bound)
        server.output.put({"event": "listening", "host": host, "port": bound} if as_json else
                          f"Serving {server.identity.name}  {server.identity.fingerprint}  "
                          f"on {where}  (Ctrl-C stops)")
        from certpair.cli.sync_report import key_alarm_lines  # noqa: PLC0415

        for line in key_alarm_lines(server.store, as_json):
            server.output.put(line)
        advertisement = None if no_advertise else _advertise(server, host, bound)
        if not server.store.count_peers():
            # It serves all the same (a device paired later is let in without a restart).
            server.note("No device is paired yet, so nobody can connect: pair one first "
                        f"('{command_hint(ctx, 'pair')}' here, 'certpair join' on the "
                        "other device).")
        try:
            listener.serve_forever()
        finally:
            if advertisement is not None:
                advertisement.close()
            server.output.close()

def _advertise(server: _Server, host: str, port: int) -> Advertisement | None:
    """Announce this serve (name, fingerprint) with DNS-SD, in the background; not on a
    loopback-only listen address, where no other device could use it."""
    import ipaddress  # noqa: PLC0415

    from certpair.announce import SERVE_SERVICE_TYPE, Advertisement  # noqa: PLC0415

    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    advertisement = Advertisement(service_type=SERVE_SERVICE_TYPE, name=server.identity.name,
                                  fingerprint=server.identity.fingerprint, port=port,
                                  listen_host=host)

    def publish() -> None:  # probing takes seconds: not in the way of serving
        problem = advertisement.start()
        if server.as_json:
            server.output.put({"event": "advertised"} if problem is None
                              else {"event": "not_advertised", "reason": problem})
        else:
            server.output.put("Advertised on the local network (_certpair-serve._tcp, "
                              "fingerprint only)" if problem is None
                              else f"Not advertised: {problem}")

    threading.Thread(target=publish, daemon=True, name="certpair-dnssd").start()
    return advertisement
