"""``certpair tunnel serve|connect``: a TCP service behind the pairing.

Options are declared here; the work (``certpair.tunnel``) is imported when a command
runs, and its events are rendered by :func:`_render`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import (
    advertised_json,
    advertised_text,
    check_identity,
    home_of,
    peer_json,
    store_of,
)
from certpair.cli.output import LineWriter
from certpair.cli.params import Finite, relay_option
from certpair.errors import BadInput, counted
from certpair.ports import TUNNEL_PORT

if TYPE_CHECKING:
    from pathlib import Path

    from certpair.relay import RelayAddress
    from certpair.store import Peer, TrustStore
    from certpair.tunnel import KeySync, TunnelEvent

__all__ = ["command"]

TUNNEL_SERVICE = "_certpair-tunnel._tcp"


def _key_sync(home: Path) -> KeySync:
    """The key-rotation sync the tunnel carries (docs/PROTOCOL.md §8 and §9): certpair's
    rotation drivers, handed to the tunnel (which sits beside them, not above). The
    drivers (and cryptography) load at the first sync, not at start."""
    from certpair.rotation.pending import load_pending, pending_certificate  # noqa: PLC0415
    from certpair.tunnel import KeySync  # noqa: PLC0415

    pending_file = str(pending_certificate(home))  # asked per connection: one stat

    def run(recv: Callable[[int], bytes], send: Callable[[bytes], None], peer: Peer,
            peer_cert: bytes, store: TrustStore, remote: str) -> tuple[str | None, str | None]:
        from certpair.rotation.exchange import run_sync  # noqa: PLC0415

        done = run_sync(recv, send, peer=peer, peer_cert=peer_cert, home=home, store=store,
                        remote=remote, initiator=False)
        return (None if done.told is None else done.told.name,  # ACCEPTED is 0: falsy
                None if done.heard is None else done.heard.name)

    def to_tell(peer: Peer, store: TrustStore) -> bool:
        if not os.path.exists(pending_file):  # no rotation pending: nothing to tell
            return False
        pending = load_pending(home)
        if pending is None:
            return False
        current = store.peer_by_device(peer.device_id) if peer.device_id else peer
        return current is not None and current.fingerprint not in store.told_peers(
            pending.fingerprint)

    return KeySync(run=run, to_tell=to_tell)


def _as_json(event: TunnelEvent) -> dict[str, Any]:
    from certpair.tunnel import events as e  # noqa: PLC0415  # one name: per event

    if isinstance(event, e.Opened):  # the two of every connection first
        return {"event": "opened", "id": event.id, "remote": event.remote,
                "peer": peer_json(event.peer),
                **({} if event.far is None else {"far": event.far,
                                                 "address_from": event.far_from})}
    if isinstance(event, e.Closed):
        return {"event": "closed", "id": event.id, "remote": event.remote,
                "peer": peer_json(event.peer), "bytes_up": event.bytes_up,
                "bytes_down": event.bytes_down, "duration_ms": round(event.duration * 1000, 1),
                "reason": event.reason}
    if isinstance(event, e.Listening):
        return {"event": "listening", "host": event.host, "port": event.port, **event.details}
    if isinstance(event, e.Advertised):
        return advertised_json(event.problem, event.again)
    if isinstance(event, e.Failed):
        return {"event": "failed", "remote": event.remote, "peer": peer_json(event.peer),
                "reason": event.reason}
    if isinstance(event, e.Announced):
        return {"event": "announced", "peer": peer_json(event.peer),
                "addresses": list(event.addresses)}
    if isinstance(event, e.PassedOver):
        return {"event": "passed_over", "peer": peer_json(event.peer), "reason": event.reason}
    if isinstance(event, e.Refused):
        return {"event": "refused", "remote": event.remote, "reason": event.reason,
                "count": event.count}
    if isinstance(event, e.Stopping):
        return {"event": "stopping", "open": event.open, "drain_timeout": event.drain_timeout}
    if isinstance(event, e.TargetDown):
        return {"event": "target_unreachable", "to": event.target, "reason": event.reason}
    if isinstance(event, e.Synced):
        return {"event": "synced", "remote": event.remote, "peer": peer_json(event.peer),
                "told": event.told, "heard": event.heard, "error": event.error}
    assert isinstance(event, e.Stopped)
    return {"event": "stopped", "cut": event.cut}


def _as_text(data: dict[str, Any], *, serving: bool) -> str:
    kind = data["event"]
    peer = data.get("peer") or {}
    if kind == "listening":
        from certpair.addresses import format_address  # noqa: PLC0415  # not at every start

        where = format_address(data["host"], data["port"])
        if "to" in data:
            return f"Tunnel to {data['to']} listening on {where}  (Ctrl-C stops)"
        return (f"Tunnel to {peer['name']} at {data['remote']} (address from "
                f"{data['address_from']}) listening on {where}  (Ctrl-C stops)")
    if kind in ("advertised", "not_advertised"):
        return advertised_text(data.get("reason"), TUNNEL_SERVICE, data.get("again"))
    if kind == "opened":
        via = (f" (at {data['far']}, address from {data['address_from']})"
               if "far" in data else "")
        if serving:  # the remote is the paired device's own address
            return f"#{data['id']} {peer['name']} from {data['remote']}: open{via}"
        # connecting: the remote is the local application that connected to this port
        return f"#{data['id']} local client {data['remote']} to {peer['name']}: open{via}"
    if kind == "closed":
        return (f"#{data['id']} {peer['name']}: closed ({data['reason']}), "
                f"{data['bytes_up']} bytes up, {data['bytes_down']} down, "
                f"{data['duration_ms']} ms")
    if kind == "failed":
        return f"Failed {data['remote']}: {data['reason']}"
    if kind == "announced":
        return (f"{peer['name']}'s tunnel is announced at {', '.join(data['addresses'])}: "
                "the next connection tries it first")
    if kind == "passed_over":
        return f"Passed over {data['reason']}"
    if kind == "refused":
        return f"Refused {data['remote']}: {data['reason']} ({data['count']})"
    if kind == "target_unreachable":
        return (f"Warning: the service {data['to']} does not answer now ({data['reason']}); "
                "serving anyway: connecting devices are told \"service unavailable\"")
    if kind == "synced":
        if data["error"]:
            return f"Key sync with {peer['name']} failed: {data['error']}"
        said = [f"told our new key: {data['told'].lower()}"] if data["told"] else []
        said += [f"its new key: {data['heard'].lower()}"] if data["heard"] else []
        return f"Key sync with {peer['name']}: {'; '.join(said) or 'nothing to tell'}"
    if kind == "stopping":
        return (f"Stopping: draining {counted(data['open'], 'connection')} "
                f"(at most {data['drain_timeout']} s)")
    return f"Stopped ({data['cut']} cut)"


@contextmanager
def _renderer(as_json: bool, *, serving: bool) -> Iterator[Callable[[TunnelEvent], None]]:
    """Events from every connection's thread, rendered and queued for the one writer:
    a connection never waits for stdout (cli/output.py)."""
    writer = LineWriter(as_json=as_json)

    def render(event: TunnelEvent) -> None:
        data = _as_json(event)
        writer.put(data if as_json else _as_text(data, serving=serving))

    try:
        yield render
    finally:
        writer.close()


_LIMITS = [
    click.option("--max-connections", type=click.IntRange(1, 100000), default=1000, metavar="N",
                 show_default=True, help="Open connections at most; more are refused."),
    click.option("--connect-timeout", type=Finite(0.1, 3600), default=10, metavar="SECONDS",
                 show_default=True, help="Seconds to reach the far end and finish TLS."),
    click.option("--idle-timeout", type=Finite(0, 86400), default=0, metavar="SECONDS",
                 show_default=True, help="Close a connection idle this long (0: never)."),
    click.option("--half-close-timeout", type=Finite(0, 86400), default=60, metavar="SECONDS",
                 show_default=True,
                 help="Once one side has ended its direction, close a connection on which "
                      "nothing moves for this long (0: never)."),
    click.option("--drain-timeout", type=Finite(0, 3600), default=10, metavar="SECONDS",
                 show_default=True,
                 help="On SIGINT/SIGTERM, seconds open connections get to finish."),
    click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line."),
]


def _limits(function: Any) -> Any:
    for option in reversed(_LIMITS):
        function = option(function)
    return function


@click.group("tunnel", short_help="Carry TCP connections between paired devices.")
def command() -> None:
    """Carry TCP connections between paired devices over mutual TLS.

    \b
    Examples:
      certpair tunnel serve --to 127.0.0.1:22
      certpair tunnel connect alpha --listen 2222
    """


@command.command("serve")
@click.option("--to", "to", required=True, metavar="HOST:PORT|unix:PATH",
              help="The service to forward to (loopback or a Unix socket).")
@click.option("--listen", "host", default="0.0.0.0", show_default=True,  # noqa: S104  # peers are other devices
              metavar="ADDR", help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=TUNNEL_PORT, show_default=True,
              metavar="PORT", help="TCP port; 0 picks a free one.")
@click.option("--allow", "allow", multiple=True, metavar="PEER", show_default="all",
              help="Let only this paired device through (repeatable).")
@click.option("--proxy-protocol", is_flag=True,
              help="Send a PROXY v2 header (address, peer fingerprint and name) first.")
@click.option("--no-advertise", is_flag=True,
              help=f"Do not publish {TUNNEL_SERVICE} (name and fingerprint) with DNS-SD.")
@click.option("--unsafe-target", is_flag=True,
              help="Allow a target on another host: the bytes past the tunnel travel in "
                   "clear and the target sees this host, not the device.")
@relay_option
@_limits
@click.pass_context
def serve(ctx: click.Context, to: str, host: str, port: int, allow: tuple[str, ...],
          proxy_protocol: bool, no_advertise: bool, unsafe_target: bool,
          relay: RelayAddress | None, max_connections: int,
          connect_timeout: float, idle_timeout: float, half_close_timeout: float,
          drain_timeout: float, as_json: bool) -> None:
    """Accept paired devices and forward each connection to a service on this host.

    A systemd socket (LISTEN_FDS) replaces --listen/--port.

    \b
    Examples:
      certpair tunnel serve --to 127.0.0.1:22
      certpair tunnel serve --to unix:/run/app.sock --allow beta --proxy-protocol
    """
    from certpair.tunnel import ServeOptions, parse_target, serve_tunnel  # noqa: PLC0415
    from certpair.tunnel.acceptor import systemd_listener  # noqa: PLC0415

    target = parse_target(to, unsafe=unsafe_target)
    check_identity(ctx)  # first: no identity is the more useful error
    store = store_of(ctx)
    # Devices, not fingerprints: an allowed device stays allowed after its key rotation.
    allowed = frozenset(store.find_peer(p).device_id for p in allow) if allow else None
    options = ServeOptions(
        home=home_of(ctx), target=target, host=host, port=port, allow=allowed,
        proxy_protocol=proxy_protocol, advertise=not no_advertise,
        max_connections=max_connections, connect_timeout=connect_timeout,
        idle_timeout=idle_timeout or None, half_close_timeout=half_close_timeout or None,
        drain_timeout=drain_timeout, key_sync=_key_sync(home_of(ctx)), relay=relay)
    with _renderer(as_json, serving=True) as render:
        serve_tunnel(options, render, listener=systemd_listener())


@command.command("connect")
@click.argument("peer", metavar="PEER")
@click.option("--to", "to", metavar="HOST[:PORT]",
              show_default="the address PEER was paired from, else DNS-SD",
              help=f"Where PEER's tunnel serve listens (port {TUNNEL_PORT} if left out).")
@click.option("--listen", "listen", required=True, metavar="[ADDR:]PORT",
              help="Local address to listen on (loopback unless --unsafe-listen).")
@click.option("--discovery-timeout", type=Finite(0, 60), default=3, metavar="SECONDS",
              show_default=True,
              help="Without --to: seconds to wait for PEER's "
                   f"{TUNNEL_SERVICE} on the local network when no address of it is "
                   "known (0: never look; else its announcements are followed while "
                   "the tunnel runs).")
@click.option("--interface", "interfaces", multiple=True, metavar="ADDR",
              help="Look only on the interface with this IPv4 address (repeatable).")
@click.option("--unsafe-listen", is_flag=True,
              help="Allow a listen address that is not loopback: whoever reaches it uses "
                   "the tunnel as this device.")
@relay_option
@_limits
@click.pass_context
def connect(ctx: click.Context, peer: str, to: str | None, listen: str,
            discovery_timeout: float, interfaces: tuple[str, ...], unsafe_listen: bool,
            relay: RelayAddress | None, max_connections: int, connect_timeout: float,
            idle_timeout: float, half_close_timeout: float, drain_timeout: float,
            as_json: bool) -> None:
    """Listen locally and carry each connection to PEER's `tunnel serve`.

    The far end must present exactly PEER's certificate. Without --to, PEER's
    addresses come from the address book for each connection, and its announcements
    are followed while the tunnel runs: a PEER that moved is reached at its new
    address by the next connection, no restart needed.

    \b
    Examples:
      certpair tunnel connect alpha --listen 2222
      certpair tunnel connect 6b2f --to 192.168.1.20 --listen 127.0.0.1:8080 --json
      certpair tunnel connect alpha --relay tcp:relay.example:4001 --listen 2222
    """
    from certpair.addresses import check_interfaces  # noqa: PLC0415
    from certpair.reach import Candidate  # noqa: PLC0415
    from certpair.tunnel import (  # noqa: PLC0415
        ConnectOptions,
        connect_tunnel,
        far_end_candidates,
        parse_listen,
    )

    listen_host, listen_port = parse_listen(listen, unsafe=unsafe_listen)
    interfaces = tuple(check_interfaces(interfaces))
    check_identity(ctx)  # first: no identity is the more useful error
    store = store_of(ctx)
    found = store.find_peer(peer)
    try:
        candidates, discover = far_end_candidates(store, found, to,
                                                  discovery_timeout=discovery_timeout,
                                                  interfaces=interfaces)
        first = candidates[0]
    except BadInput:
        if relay is None or to is not None:
            raise
        # No address known: the relay alone.
        candidates, discover, first = [], None, Candidate(host="", port=0, source="relay")
    options = ConnectOptions(
        home=home_of(ctx), peer=found, host=first.host, port=first.port, source=first.source,
        candidates=tuple(candidates), discover=discover,
        listen_host=listen_host, listen_port=listen_port, max_connections=max_connections,
        connect_timeout=connect_timeout, idle_timeout=idle_timeout or None,
        half_close_timeout=half_close_timeout or None, drain_timeout=drain_timeout,
        key_sync=_key_sync(home_of(ctx)), relay=relay, follow=to is None,
        discovery_timeout=discovery_timeout, interfaces=interfaces)
    with _renderer(as_json, serving=False) as render:
        connect_tunnel(options, render)
