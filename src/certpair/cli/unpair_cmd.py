"""``certpair unpair PEER``: stop trusting a device (by name or fingerprint prefix)."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json, find_peer, store_of
from certpair.cli.terminal import printable

__all__ = ["command"]


@click.command("unpair", short_help="Stop trusting a paired device.")
@click.argument("peer", metavar="PEER")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, peer: str, as_json: bool) -> None:
    """Stop trusting a paired device.

    PEER is its name, or at least 4 hex digits of its fingerprint. Running servers and
    clients refuse it from their next connection on.

    \b
    Examples:
      certpair unpair beta
      certpair unpair 6b2f
    """
    store = store_of(ctx, verify=False)  # the remedy for a damaged row
    removed = store.remove_peer(find_peer(store, peer).fingerprint)
    if as_json:
        emit_json({"event": "unpaired",
                   "peer": {"name": removed.name, "fingerprint": removed.fingerprint}})
    else:
        click.echo(f"Unpaired {printable(removed.name)}  {removed.fingerprint}")
