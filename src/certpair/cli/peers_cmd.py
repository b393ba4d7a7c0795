"""``certpair peers``: the trusted peers."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json, store_of
from certpair.cli.terminal import printable

__all__ = ["command"]


@click.command("peers")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show at most N devices (default: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N",
              help="Skip the first N devices (oldest pairing first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per peer and line.")
@click.pass_context
def command(ctx: click.Context, limit: int | None, offset: int, as_json: bool) -> None:
    """List the devices this one trusts."""
    from certpair.store.anchors import anchor_problem  # noqa: PLC0415  # fast start-up

    store = store_of(ctx, read_only=True)
    # Streamed page by page: memory and time to the first line do not grow with the store.
    peers = (store.iter_peers() if limit is None and offset == 0
             else iter(store.peers_page(limit=limit, offset=offset)))
    shown = 0
    for peer in peers:
        shown += 1
        flagged = anchor_problem(peer.cert_der)
        if as_json:
            emit_json({"name": peer.name, "fingerprint": peer.fingerprint, "mode": peer.mode,
                       "paired_at": peer.paired_at, "confirmed": peer.confirmed,
                       "flagged": flagged})
            continue
        flag = "" if peer.confirmed else "  unconfirmed (settle with ping/serve)"
        click.echo(f"{printable(peer.name)}  {peer.fingerprint}  {peer.mode}  "
                   f"{peer.paired_at}{flag}")
        if flagged is not None:
            click.echo(f"Warning: {printable(peer.name)} is not trusted: its certificate could"
                       f" sign others ({flagged}); unpair it and pair again.", err=True)
    if not shown and not as_json:
        click.echo("No paired devices yet." if offset == 0 else "No more paired devices.")
