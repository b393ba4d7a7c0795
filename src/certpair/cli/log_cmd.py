"""``certpair log``: the audit log (pairings, connections, unpairings, renames)."""

from __future__ import annotations

import dataclasses

import click

from certpair.cli.context import emit_json, store_of
from certpair.cli.peers_cmd import NAME_COLUMNS
from certpair.cli.render import Columns, width

__all__ = ["command"]

_MAX_REMOTE = 47  # "[" + a full IPv6 address + "]:65535"


@click.command("log", short_help="Show the audit log, newest first.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), metavar="N", default=50,
              show_default=True, help="How many events to show.")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N",
              show_default=True, help="Skip the N newest events (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, limit: int, offset: int, as_json: bool) -> None:
    """Show logged events, newest first: pairing attempts, connections, unpairings,
    renames. Times are UTC.

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
    remote = min(_MAX_REMOTE, max(width(e.remote or "-") for e in events))
    columns = Columns(("TIME", "EVENT", "ROLE", "OUTCOME", "PEER", "REMOTE", "REASON"),
                      (20, 10, 8, 11, NAME_COLUMNS, remote))
    click.echo(columns.header())
    for e in events:
        click.echo(columns.row((e.at, e.kind, e.role, e.outcome, e.peer_name or "-",
                                e.remote or "-",
                                (e.reason or "-") + (f" x{e.count}" if e.count > 1 else ""))))
