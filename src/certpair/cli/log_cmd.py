"""``certpair log``: the audit log (pairings, connections, unpairings, renames)."""

from __future__ import annotations

import dataclasses

import click

from certpair.cli.context import emit_json, store_of
from certpair.cli.terminal import printable

__all__ = ["command"]


@click.command("log")
@click.option("--limit", type=click.IntRange(1, 1_000_000), metavar="N", default=50,
              show_default=True,
              help="How many events to show.")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N",
              help="Skip the N newest events (the next page).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
@click.pass_context
def command(ctx: click.Context, limit: int, offset: int, as_json: bool) -> None:
    """Show logged events, newest first."""
    events = store_of(ctx, read_only=True).events(limit=limit, offset=offset)
    for event in events:
        if as_json:
            emit_json(dataclasses.asdict(event))
            continue
        peer = printable(event.peer_name or "-")
        line = (f"{event.at}  {event.kind:<10} {event.role:<8} {event.outcome:<8} "
                f"{peer}  {event.remote or '-'}")
        click.echo(f"{line}  {printable(event.reason)}" if event.reason else line)
    if not events and not as_json:
        click.echo("No events yet.")
