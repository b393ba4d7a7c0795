"""``certpair log``: the audit log (pairings, connections, unpairings, renames)."""

from __future__ import annotations

import dataclasses

import click

from certpair.cli.context import emit_json, store_of
from certpair.cli.peers_cmd import NAME_COLUMNS
from certpair.cli.render import TERMINAL_COLUMNS, Columns, width

__all__ = ["command"]

_MAX_REMOTE = 47  # "[" + a full IPv6 address + "]:65535"

# What happened, in the words a person uses: the kind of event and this device's part
# in it (the stored kind and role are in --wide and --json).
_WHAT = {
    ("pairing", "offerer"): "pairing, offered",
    ("pairing", "joiner"): "pairing, joined",
    ("pairing", "local"): "pairing",
    ("connection", "server"): "serve, incoming",
    ("connection", "client"): "ping, outgoing",
    ("connection", "tunnel-server"): "tunnel, incoming",
    ("connection", "tunnel-client"): "tunnel, outgoing",
    ("rotation", "local"): "own key rotation",
    ("rotation", "peer"): "peer's rotation",
    ("rotation", "rotating"): "rotation told",
    ("unpairing", "local"): "unpairing",
    ("rename", "local"): "rename",
}
# By default a line fits 80 columns: time to the second, what happened, outcome, peer,
# the remote host (its port, mostly an ephemeral one, and the rest in --wide, which adds
# the stored role and the reason).
_NARROW = Columns(("TIME", "EVENT", "OUTCOME", "PEER", "REMOTE HOST"), (19, 16, 10, 12),
                  fit=TERMINAL_COLUMNS)


@click.command("log", short_help="Show the audit log, newest first.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), metavar="N", default=50,
              show_default=True, help="How many events to show.")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N",
              show_default=True, help="Skip the N newest events (the next page).")
@click.option("--wide", is_flag=True,
              help="Also print each event's role and reason (lines wider than 80 columns).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, limit: int, offset: int, wide: bool, as_json: bool) -> None:
    """Show logged events, newest first: pairing attempts, connections, unpairings,
    renames, key rotations. Times are UTC. Lines fit 80 columns; --wide adds the role
    and the reason of each event, --json everything.

    \b
    Examples:
      certpair log --limit 10
      certpair log --offset 50 --json
    """
    events = store_of(ctx, read_only=True).events(limit=limit, offset=offset)
    if as_json:
        for event in events:
            emit_json(dataclasses.asdict(event))
        return
    if not events:
        click.echo("No events yet." if offset == 0 else "No more events.")
        return
    if not wide:
        click.echo(_NARROW.header())
        for e in events:
            outcome = e.outcome + (f" x{e.count}" if e.count > 1 else "")
            click.echo(_NARROW.row((e.at.replace("T", " ").rstrip("Z"),
                                    _WHAT.get((e.kind, e.role), f"{e.kind} ({e.role})"),
                                    outcome, e.peer_name or "-", _host(e.remote))))
        return
    remote = min(_MAX_REMOTE, max(width(e.remote or "-") for e in events))
    columns = Columns(("TIME", "EVENT", "ROLE", "OUTCOME", "PEER", "REMOTE", "REASON"),
                      (20, 10, 13, 11, NAME_COLUMNS, remote))
    click.echo(columns.header())
    for e in events:
        click.echo(columns.row((e.at, e.kind, e.role, e.outcome, e.peer_name or "-",
                                e.remote or "-",
                                (e.reason or "-") + (f" x{e.count}" if e.count > 1 else ""))))


def _host(remote: str) -> str:
    """The host of a ``HOST:PORT`` / ``[V6]:PORT`` remote (as stored), or ``-``."""
    if not remote:
        return "-"
    if remote.startswith("["):
        return remote[1:].split("]", 1)[0]
    host, colon, port = remote.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else remote
