"""``certpair ping PEER|HOST[:PORT]``: mutual-TLS round trip to a paired device's ``serve``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json, home_of, identity_of, store_of
from certpair.cli.params import Finite, HostPort, relay_option
from certpair.cli.terminal import printable
from certpair.errors import BadInput, CertpairError, NetworkError, PairingFailed
from certpair.ports import ALPN_SERVE, SERVE_PORT, alpn_offer, no_such_name

if TYPE_CHECKING:
    import ssl
    from pathlib import Path

    from certpair.reach import Candidate
    from certpair.relay import RelayAddress
    from certpair.rotation.exchange import SyncOutcome
    from certpair.store import Peer, TrustStore


__all__ = ["command"]

_MAX_ANSWER = 65536


def _exchange(tls: ssl.SSLSocket, remote: str) -> dict[str, Any]:
    """Send one line and read the JSON line ``serve`` answers (the socket has a timeout)."""
    from certpair.trusted import NotPaired, connection_error  # noqa: PLC0415

    try:
        tls.sendall(b"ping\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < _MAX_ANSWER:
            chunk = tls.recv(4096)
            if not chunk:
                # An orderly TLS close before any answer: serve refused this device after
                # the handshake (a cut connection raises instead: strict_eof).
                raise NotPaired(f"{remote} closed the connection without answering: it "
                                "refused this device (it does not trust it, or its own "
                                "trust store is unusable: see its serve output)")
            data += chunk
    except OSError as exc:
        raise connection_error(exc, remote) from exc
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise NetworkError(f"{remote} does not speak certpair serve")
    return answer


@click.command("ping", short_help="Time a mutual-TLS round trip to a paired device.")
@click.argument("target", metavar="PEER|HOST[:PORT]")
@click.option("--timeout", type=Finite(0.1, 3600), default=10, show_default=True,
              metavar="SECONDS",
              help="Seconds for connecting and for each answer.")
@click.option("--discovery-timeout", type=Finite(0, 60), default=3, metavar="SECONDS",
              show_default=True,
              help="For PEER: seconds to look for its serve's announcement on the local "
                   "network, raced with its known addresses (0: do not).")
@relay_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, target: str, timeout: float, discovery_timeout: float,
            relay: RelayAddress | None, as_json: bool) -> None:
    """Time a mutual-TLS round trip to a paired device, then sync key rotations.

    PEER is a paired device's name or fingerprint prefix: its addresses from the
    address book (where it was last reached or announced) and its serve's DNS-SD
    announcement are raced, and the output says which address answered. Anything
    else is HOST[:PORT]. The device must run `certpair serve`; an unpaired one ends
    with exit status 1. With --relay (or CERTPAIR_RELAY), a PEER that none of those
    answers for is reached through the relay, at its `serve --relay` (docs/RELAY.md).

    \b
    Examples:
      certpair ping alpha
      certpair ping 192.168.1.20
      certpair ping '[fe80::1%eth0]:4491' --json
    """
    from certpair.reach import CONTACT, RELAYED, SERVE  # noqa: PLC0415
    from certpair.trusted import NotPaired, check_service  # noqa: PLC0415
    from certpair.trusted.failures import strict_eof  # noqa: PLC0415

    home = home_of(ctx)
    identity_of(ctx)  # first: no identity is the more useful error
    store = store_of(ctx, verify=False)  # reads one peer, checked as read
    named = _named_peer(store, target)
    peer: Peer | None = None
    remote = target
    try:
        start = time.perf_counter()
        tls, peer, used = _reach(ctx, home, store, named, target, timeout, discovery_timeout,
                                 relay, as_json)
        remote = f"relay {relay}" if used.kind == RELAYED else str(used)
        with strict_eof(tls):  # a serve that died is "cut", never "does not trust"
            check_service(tls, ALPN_SERVE, remote)
            try:
                _exchange(tls, remote)  # answered only once the server accepted this device
            except NotPaired as exc:
                if peer.confirmed:
                    raise
                raise NotPaired(
                    f"{peer.name} at {remote} does not trust this device: the pairing, "
                    "unconfirmed here, did not complete there; pair again") from exc
            setup = time.perf_counter() - start
            start = time.perf_counter()
            _exchange(tls, remote)
            rtt = time.perf_counter() - start
            # Through a relay: a "via relay R" entry, never taken for the peer's address.
            store.note_address(peer, used.host, used.port, service=SERVE, source=CONTACT,
                               kind=used.kind)
            synced = _sync(tls, peer, home, store, remote)
    except CertpairError as exc:
        outcome = "refused" if isinstance(exc, PairingFailed) else "failed"
        store.record_event(kind="connection", role="client", remote=remote, mode="mtls",
                           outcome=outcome, reason=str(exc))
        if as_json:
            emit_json({"event": "failed", "reason": str(exc)})
        raise
    store.record_event(kind="connection", role="client", remote=remote, mode="mtls",
                       outcome="accepted", reason="", peer_fingerprint=peer.fingerprint,
                       peer_name=peer.name)
    if not peer.confirmed and store.confirm_peer(peer.fingerprint, remote=remote,
                                                 reason="trusted connection (ping)"):
        # serve answered, so it accepted this device's certificate: it trusts us.
        if as_json:
            emit_json({"event": "confirmed", "peer": {"name": peer.name,
                                                      "fingerprint": peer.fingerprint}})
        else:
            click.echo(f"Pairing with {peer.name} confirmed: it trusts this device too.")
    if as_json:
        emit_json({"event": "reply", "remote": remote, "address_from": used.source,
                   "peer": {"name": peer.name, "fingerprint": peer.fingerprint},
                   "rtt_ms": round(rtt * 1000, 3), "connect_ms": round(setup * 1000, 3)})
    else:
        click.echo(f"Reply from {printable(peer.name)}  {peer.fingerprint}  at {remote} "
                   f"(address from {used.source}): rtt {rtt * 1000:.2f} ms  "
                   f"(connect + handshake {setup * 1000:.1f} ms)")
    from certpair.cli.sync_report import render_key_alarms, render_sync  # noqa: PLC0415

    if synced is not None:
        render_sync(synced[0], remote, as_json, error=synced[1], quiet=True)
    if synced is None or synced[0] is None or not synced[0].key_conflict:
        render_key_alarms(store, as_json, only=peer.fingerprint)  # a mark from before


def _passed(lines: list[str], as_json: bool) -> None:
    """The addresses passed over on the way (a wrong hint: another device answered)."""
    for line in lines:
        if as_json:
            emit_json({"event": "passed_over", "reason": line})
        else:
            click.echo(f"Passed over {printable(line)}")


def _named_peer(store: TrustStore, target: str) -> Peer | None:
    """The paired device ``target`` names (name or fingerprint prefix), or None."""
    from certpair.store import PeerNotFound  # noqa: PLC0415

    try:
        return store.find_peer(target)
    except PeerNotFound:
        return None


def _reach(ctx: click.Context, home: Path, store: TrustStore, named: Peer | None,
           target: str, timeout: float, discovery_timeout: float,
           relay: RelayAddress | None, as_json: bool,
           ) -> tuple[ssl.SSLSocket, Peer, Candidate]:
    """Connect to ``named`` (at its known or announced addresses; with a relay, those
    for a short while and then the relay) or to HOST[:PORT]; say which addresses were
    passed over (another device answered there)."""
    from certpair.reach import GIVEN, SERVE, Candidate, relayed_via  # noqa: PLC0415
    from certpair.trusted import client_context, connect  # noqa: PLC0415
    from certpair.trusted.relayed import reach_peer  # noqa: PLC0415
    from certpair.trusted.routes import route  # noqa: PLC0415

    if named is None:
        host, port = HostPort(SERVE_PORT).convert(target, None, ctx)
    context = client_context(home, peer=named)
    # Names the protocol, so that a port of another kind refuses, or names itself, at once.
    context.set_alpn_protocols(alpn_offer(ALPN_SERVE))
    if named is None:
        try:
            tls, peer = connect(host, port, home, context=context, timeout=timeout)
        except NetworkError as exc:
            if no_such_name(exc.__cause__):  # a typo, not a network failure: exit 2
                raise BadInput(f"{target} is neither a paired device nor a host name that "
                               "resolves (`certpair peers` lists the paired ones)") from exc
            raise
        return tls, peer, Candidate(host=host, port=port, source=GIVEN)
    candidates, discover = route(store, named, SERVE, SERVE_PORT,
                                 discovery_timeout=discovery_timeout)
    via = None if relay else relayed_via(store.address_book(named), service=SERVE)
    passed: list[str] = []
    reached = reach_peer(named, candidates, home, context=context, timeout=timeout,
                         discover=discover, relay=relay, via=via,
                         alpn=alpn_offer(ALPN_SERVE), passed=passed)
    _passed(passed, as_json)  # on failure, the error says it all
    return reached


def _sync(tls: ssl.SSLSocket, peer: Peer, home: Path, store: TrustStore,
          remote: str) -> tuple[SyncOutcome | None, CertpairError | None] | None:
    """After the measurement: tell or learn a key rotation (None: nothing to report)."""
    from certpair.rotation.exchange import SyncNotSupported, run_sync  # noqa: PLC0415
    from certpair.trusted import connection_error  # noqa: PLC0415

    try:
        outcome = run_sync(tls.recv, tls.sendall, peer=peer,
                           peer_cert=tls.getpeercert(binary_form=True) or b"", home=home,
                           store=store, remote=remote, initiator=True)
    except SyncNotSupported:
        return None  # an older serve: the ping itself worked
    except OSError as exc:
        return None, connection_error(exc, remote)
    except CertpairError as exc:
        return None, exc
    return outcome, None
