"""``certpair sync PEER|HOST[:PORT]`` / ``sync --all``: tell and learn key rotations."""

from __future__ import annotations

import time

import click

from certpair.cli.context import emit_json, home_of, store_of
from certpair.cli.params import Finite, parse_host_port
from certpair.cli.serve_cmd import DEFAULT_SERVE_PORT
from certpair.errors import BadInput, NetworkError

__all__ = ["command"]


@click.command("sync", short_help="Tell paired devices a key rotation, and learn theirs.")
@click.argument("target", required=False, metavar="PEER|HOST[:PORT]")
@click.option("--all", "every", is_flag=True,
              help="Every peer whose serve address is known (from earlier ping or sync).")
@click.option("--timeout", type=Finite(0.1, 3600), default=10, show_default=True,
              metavar="SECONDS", help="Seconds for connecting and for each answer.")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              metavar="N", help="Peers synced at once with --all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, target: str | None, every: bool, timeout: float,
            workers: int, as_json: bool) -> None:
    """Tell paired devices this device's pending key rotation, and learn theirs.

    PEER is a paired device's name or fingerprint prefix (its serve address is the
    one last reached); anything else is HOST[:PORT] of a paired device's serve.
    Every ping does the same with the device it reaches.

    \b
    Examples:
      certpair sync 192.168.1.20
      certpair sync laptop --json
      certpair sync --all
    """
    from certpair.rotation.fleet import sync_all, sync_with  # noqa: PLC0415
    from certpair.store import PeerNotFound  # noqa: PLC0415

    if every == (target is not None):
        raise BadInput("give one PEER or HOST[:PORT], or --all")
    home = home_of(ctx)
    store = store_of(ctx)
    from certpair.cli.sync_report import render_key_alarms, render_sync  # noqa: PLC0415

    if target is not None:
        try:
            peer = store.find_peer(target)
        except PeerNotFound:
            host, port = parse_host_port(target, DEFAULT_SERVE_PORT)
        else:
            address = store.addresses().get(peer.fingerprint)
            if address is None:
                raise BadInput(f"no serve address is known for {peer.name}; "
                               "give HOST[:PORT] once (or ping it)")
            host, port = parse_host_port(address, DEFAULT_SERVE_PORT)
        outcome = sync_with(host, port, home=home, store=store, timeout=timeout)
        render_sync(outcome, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", as_json)
        if not outcome.key_conflict:
            render_key_alarms(store, as_json, only=outcome.peer.fingerprint)
        return
    start = time.perf_counter()
    done = failed = 0
    for attempt in sync_all(home, store, workers=workers, timeout=timeout):
        render_sync(attempt.outcome, attempt.address, as_json, error=attempt.error,
                    quiet=attempt.outcome is not None and not as_json)
        if attempt.outcome is not None and not attempt.outcome.key_conflict:
            render_key_alarms(store, as_json, only=attempt.outcome.peer.fingerprint)
        done, failed = done + (attempt.outcome is not None), failed + (attempt.error is not None)
    seconds = time.perf_counter() - start
    if as_json:
        emit_json({"event": "summary", "synced": done, "failed": failed,
                   "seconds": round(seconds, 3)})
    else:
        click.echo(f"Synced {done} of {done + failed} peers in {seconds:.2f} s.")
    if failed:
        raise NetworkError(f"{failed} of {done + failed} syncs failed")
