"""``certpair serve``: options and rendering; the server is :mod:`certpair.serving`.

Every line goes through the one writer of long-running commands (``cli/output.py``),
so serving never waits on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import (
    advertised_json,
    advertised_text,
    command_hint,
    home_of,
    identity_of,
    peer_json,
    store_of,
)
from certpair.cli.output import LineWriter
from certpair.cli.params import relay_option
from certpair.cli.terminal import printable
from certpair.ports import SERVE_PORT

if TYPE_CHECKING:
    from certpair.identity import Identity
    from certpair.relay import RelayAddress
    from certpair.serving import ServeEvent
    from certpair.store import TrustStore

__all__ = ["command"]

SERVE_SERVICE = "_certpair-serve._tcp"


def _lines(event: ServeEvent, identity: Identity, store: TrustStore,
           as_json: bool) -> list[dict[str, Any] | str]:
    from certpair.addresses import format_address  # noqa: PLC0415
    from certpair.cli.sync_report import key_alarm_lines, sync_lines  # noqa: PLC0415
    from certpair.serving import (  # noqa: PLC0415
        Advertised,
        Confirmed,
        Connection,
        Listening,
        Probe,
        RelayStatus,
        StoreProblem,
        Synced,
    )

    if isinstance(event, Listening):
        where = format_address(event.host, event.port)
        return [{"event": "listening", "host": event.host, "port": event.port} if as_json
                else f"Serving {identity.name}  {identity.fingerprint}  on {where}  "
                     "(Ctrl-C stops)", *key_alarm_lines(store, as_json)]
    if isinstance(event, Connection):
        peer = event.peer
        if as_json:
            row: dict[str, Any] = {"event": "connection", "remote": event.remote,
                                   "outcome": "accepted" if peer else "refused",
                                   "peer": peer_json(peer), "reason": event.reason}
            if event.count > 1:
                row["count"] = event.count  # relayed refusals, counted
            return [row]
        if peer is not None:
            return [f"Accepted {printable(peer.name)}  {peer.fingerprint}  from {event.remote}"]
        if event.count > 1:
            return [f"Refused {event.remote} {event.count} more times: "
                    f"{printable(event.reason)}"]
        return [f"Refused {event.remote}: {printable(event.reason)}"]
    if isinstance(event, Advertised):
        return [advertised_json(event.problem, event.again) if as_json
                else advertised_text(event.problem, SERVE_SERVICE, event.again)]
    if isinstance(event, Probe):
        peer = event.peer
        if as_json:
            return [{"event": "connection", "remote": event.remote, "outcome": "probe",
                     "peer": peer_json(peer), "reason": "completed the handshake, sent nothing"}]
        return [f"Probe from {printable(peer.name)}  {peer.fingerprint}  at {event.remote}: "
                "completed the handshake, sent nothing"]
    if isinstance(event, Synced):
        return sync_lines(event.outcome, event.remote, as_json, error=event.error,
                          quiet=event.error is None)
    if isinstance(event, RelayStatus):
        if as_json:
            line: dict[str, Any] = {"event": "relay", "relay": event.relay,
                                    "status": "waiting" if event.waiting else "retrying"}
            if not event.waiting:
                line.update(reason=event.reason, retry_in=event.retry_in)
            return [line]
        return [f"Also waiting at the relay {event.relay} for paired devices."
                if event.waiting else
                f"Warning: {event.reason}; trying again in {event.retry_in:g} s"]
    if isinstance(event, Confirmed):
        text = (f"Pairing with {printable(event.peer.name)} confirmed: it trusts this "
                "device too.")
    else:
        assert isinstance(event, StoreProblem)
        text = f"Warning: {event.problem}; serving continues without logging"
    return [{"event": "note", "text": text} if as_json else text]


@click.command("serve", short_help="Accept mutual-TLS connections from paired devices.")
@click.option("--listen", "host", default="0.0.0.0", show_default=True,  # noqa: S104  # peers are other devices
              metavar="ADDR", help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=SERVE_PORT,
              show_default=True, metavar="PORT", help="TCP port; 0 picks a free one.")
@click.option("--no-advertise", is_flag=True,
              help=f"Do not publish {SERVE_SERVICE} (name and fingerprint) with DNS-SD.")
@relay_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, host: str, port: int, no_advertise: bool,
            relay: RelayAddress | None, as_json: bool) -> None:
    """Accept mutual-TLS connections from paired devices; log each one.

    Each line a peer sends is answered with a JSON line naming both devices; a
    `sync` line runs the key-rotation sync (see `certpair rotate`). Unless it listens
    on loopback only, it announces itself on the local network (DNS-SD, name and
    fingerprint), so that peers find it by name after its address changed. With
    --relay (or CERTPAIR_RELAY) a few connections also wait at that transit relay, for
    paired devices that cannot reach this one directly (`certpair ping --relay R PEER`).

    \b
    Examples:
      certpair serve
      certpair serve --listen 127.0.0.1 --port 0 --json
    """
    from certpair.serving import Listening, serve  # noqa: PLC0415  # fast start-up

    home: Path = home_of(ctx)
    identity, store = identity_of(ctx), store_of(ctx)
    output = LineWriter(as_json=as_json)

    def render(event: ServeEvent) -> None:  # from every connection's thread; never waits
        for line in _lines(event, identity, store, as_json):
            output.put(line)
        if isinstance(event, Listening) and not store.count_peers():
            # It serves all the same (a device paired later is let in without a restart).
            text = ("No device is paired yet, so nobody can connect: pair one first "
                    f"('{command_hint(ctx, 'pair')}' here, 'certpair join' on the other "
                    "device).")
            output.put({"event": "note", "text": text} if as_json else text)

    try:
        serve(home, identity, store, host=host, port=port, advertise=not no_advertise,
              relay=relay, on_event=render)
    finally:
        output.close()
