"""``certpair rotate``: make a new key and certificate, tell the peers, then switch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from certpair.cli.context import emit_json, home_of, store_of
from certpair.cli.render import Columns
from certpair.cli.terminal import printable
from certpair.errors import counted

if TYPE_CHECKING:
    from certpair.rotation.status import RotationStatus
    from certpair.store import Peer

__all__ = ["command"]


def _peer(peer: Peer) -> dict[str, str]:
    return {"name": peer.name, "fingerprint": peer.fingerprint}


def _show_status(status: RotationStatus, as_json: bool) -> None:
    pending = status.pending
    if as_json:
        emit_json({"event": "status", "fingerprint": status.identity.fingerprint,
                   "pending": pending.fingerprint if pending else None,
                   "learned": len(status.learned), "missing": len(status.missing)})
        for peer, learned in ([(p, True) for p in status.learned]
                              + [(p, False) for p in status.missing]):
            emit_json({"event": "peer", "peer": _peer(peer), "learned": learned})
        return
    click.echo(f"Current certificate  {status.identity.fingerprint}")
    if pending is None:
        click.echo("No rotation pending.")
        return
    click.echo(f"Pending certificate  {pending.fingerprint}")
    # Aligned columns, peer names made harmless and cut (see `certpair peers`).
    columns = Columns(("  STATE", "NAME", "FINGERPRINT"), (13, 20))
    if status.learned or status.missing:
        click.echo(columns.header())
    for peer in status.learned:
        click.echo(columns.row(("  learned", peer.name, peer.fingerprint)))
    for peer in status.missing:
        click.echo(columns.row(("  not learned", peer.name, peer.fingerprint)))
    total = len(status.learned) + len(status.missing)
    click.echo(f"{len(status.learned)} of {counted(total, 'peer')} "
               f"{'has' if len(status.learned) == 1 else 'have'} learned it.")


@click.command("rotate", short_help="Replace this device's key without pairing again.")
@click.option("--status", "action", flag_value="status",
              help="Show, per peer, whether it has learned the pending certificate.")
@click.option("--finish", "action", flag_value="finish",
              help="Switch to the pending key and certificate.")
@click.option("--abort", "action", flag_value="abort", help="Drop the pending key.")
@click.option("--force", is_flag=True,
              help="--finish or --abort even though peers would be left behind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, action: str | None, force: bool, as_json: bool) -> None:
    """Replace this device's key without pairing again.

    Without options: make a new key and certificate (same name), pending. Peers
    learn it whenever the devices next talk (ping, serve, sync); then --finish
    switches to it (running serve and tunnels switch for their next connection,
    without a restart). Suspected key theft calls
    for unpair and pair again instead: whoever holds the old key can rotate too.

    \b
    Examples:
      certpair rotate
      certpair rotate --status
      certpair sync --all && certpair rotate --finish
    """
    from certpair.rotation import status as status_mod  # noqa: PLC0415

    home = home_of(ctx)
    if force and action not in ("finish", "abort"):
        raise click.UsageError("--force goes with --finish or --abort")
    store = store_of(ctx, read_only=action == "status")
    if action == "status":
        _show_status(status_mod.rotation_status(home, store), as_json)
        return
    if action == "finish":
        done = status_mod.finish(home, store, force=force)
        assert done.pending is not None
        left = [_peer(p) for p in done.missing]
        if as_json:
            emit_json({"event": "finished", "fingerprint": done.pending.fingerprint,
                       "previous": done.identity.fingerprint, "left_behind": left,
                       "logged": done.unlogged is None})
        else:
            click.echo(f"This device is now {done.pending.fingerprint}.")
            if left:
                click.echo(f"{counted(len(left), 'peer')} never learned it and will refuse "
                           "this device.")
        _unlogged(done, "the switch")
        return
    if action == "abort":
        dropped = status_mod.abort(home, store, force=force)
        assert dropped.pending is not None
        if as_json:
            emit_json({"event": "aborted", "fingerprint": dropped.pending.fingerprint,
                       "logged": dropped.unlogged is None})
        else:
            click.echo(f"Dropped the pending certificate {dropped.pending.fingerprint}.")
        _unlogged(dropped, "the drop")
        return
    started = status_mod.start(home, store)
    identity, pending = started.identity, started.pending
    assert pending is not None
    if as_json:
        emit_json({"event": "pending", "fingerprint": pending.fingerprint,
                   "current": identity.fingerprint, "peers": store.count_peers()})
    else:
        click.echo(f"New certificate {pending.fingerprint} is pending "
                   f"(this device is still {identity.fingerprint}).")
        click.echo("Peers learn it the next time you ping them, they ping you, or on "
                   "'certpair sync --all'; then run 'certpair rotate --finish'.")


def _unlogged(status: RotationStatus, what: str) -> None:
    """Done, but not in the audit log: say so apart from the outcome (exit 0 all the same:
    the step happened, and a rerun would do something else)."""
    if status.unlogged is not None:
        click.echo(f"Warning: {what} is done, but the audit log has no row for it: "
                   f"{printable(status.unlogged)}", err=True)
