"""``certpair rename PEER NAME``: change the local name of a paired device."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json, find_peer, store_of
from certpair.cli.terminal import printable

__all__ = ["command"]


@click.command("rename", short_help="Give a paired device a new local name.")
@click.argument("peer", metavar="PEER")
@click.argument("name", metavar="NAME")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, peer: str, name: str, as_json: bool) -> None:
    """Give a paired device a new local name.

    PEER is its current name, or at least 4 hex digits of its fingerprint.

    \b
    Examples:
      certpair rename beta kitchen-pi
      certpair rename 6b2f kitchen-pi
    """
    store = store_of(ctx, verify=False)
    old = find_peer(store, peer)
    renamed = store.rename_peer(old.fingerprint, name)
    if as_json:
        emit_json({"event": "renamed", "old_name": old.name,
                   "peer": {"name": renamed.name, "fingerprint": renamed.fingerprint}})
    else:
        click.echo(f"Renamed {printable(old.name)} to {printable(renamed.name)}  "
                   f"{renamed.fingerprint}")
