"""``certpair peers``: the trusted peers."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json, store_of

__all__ = ["command"]


@click.command("peers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per peer and line.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """List the devices this one trusts."""
    peers = store_of(ctx, read_only=True).peers()
    for peer in peers:
        if as_json:
            emit_json({"name": peer.name, "fingerprint": peer.fingerprint, "mode": peer.mode,
                       "paired_at": peer.paired_at, "confirmed": peer.confirmed})
        else:
            flag = "" if peer.confirmed else "  unconfirmed (settle with ping/serve)"
            click.echo(f"{peer.name}  {peer.fingerprint}  {peer.mode}  {peer.paired_at}{flag}")
    if not peers and not as_json:
        click.echo("No paired devices yet.")
