"""``certpair sync PEER|HOST[:PORT]`` / ``sync --all``: tell and learn key rotations."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from certpair.cli.context import emit_json, home_of, store_of
from certpair.cli.params import Finite, parse_host_port, relay_option
from certpair.cli.terminal import printable
from certpair.errors import BadInput, NetworkError
from certpair.ports import SERVE_PORT

if TYPE_CHECKING:
    from certpair.relay import RelayAddress

__all__ = ["command"]


@click.command("sync", short_help="Tell paired devices a key rotation, and learn theirs.")
@click.argument("target", required=False, metavar="PEER|HOST[:PORT]")
@click.option("--all", "every", is_flag=True,
              help="Every paired device, at the addresses the address book holds.")
@click.option("--timeout", type=Finite(0.1, 3600), default=10, show_default=True,
              metavar="SECONDS", help="Seconds for connecting and for each answer.")
@click.option("--discovery-timeout", type=Finite(0, 60), default=3, metavar="SECONDS",
              show_default=True,
              help="Seconds to look for a peer's serve announcement on the local network, "
                   "raced with its known addresses (0: do not; with --all one look for "
                   "every peer).")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              metavar="N", help="Peers synced at once with --all.")
@relay_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, target: str | None, every: bool, timeout: float,
            discovery_timeout: float, workers: int, relay: RelayAddress | None,
            as_json: bool) -> None:
    """Tell paired devices this device's pending key rotation, and learn theirs.

    PEER is a paired device's name or fingerprint prefix: it is reached at its
    addresses from the address book (where it was last reached, announced or paired)
    and its serve's announcement, and only that device may answer (another device at
    one of its addresses is passed over, and said). Anything else is HOST[:PORT] of a
    paired device's serve. Every ping does the same with the device it reaches. With
    --all, every peer is looked for the same way (one DNS-SD browse for all). With
    --relay (or CERTPAIR_RELAY), a PEER that none of its addresses
    answers for is reached through the relay, at its `serve --relay` (docs/RELAY.md);
    with --all, every such peer. With --all, a peer that cannot be reached is named
    with the reason, and the exit status is 4.

    \b
    Examples:
      certpair sync laptop --json
      certpair sync 192.168.1.20
      certpair sync --all
      certpair sync --all --relay tcp:relay.example:4001
    """
    from certpair.addresses import format_address  # noqa: PLC0415
    from certpair.rotation.fleet import sync_all, sync_peer, sync_with  # noqa: PLC0415
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
            host, port = parse_host_port(target, SERVE_PORT)
            outcome = sync_with(host, port, home=home, store=store, timeout=timeout)
            render_sync(outcome, format_address(host, port), as_json)
            if not outcome.key_conflict:
                render_key_alarms(store, as_json, only=outcome.peer.fingerprint)
            return
        attempt = sync_peer(peer, home=home, store=store, timeout=timeout,
                            discovery_timeout=discovery_timeout, relay=relay)
        _passed(attempt.passed, as_json)
        if attempt.error is not None:
            raise attempt.error
        assert attempt.outcome is not None
        render_sync(attempt.outcome, attempt.address, as_json, address_from=attempt.address_from)
        if not attempt.outcome.key_conflict:
            render_key_alarms(store, as_json, only=attempt.outcome.peer.fingerprint)
        return
    start = time.perf_counter()
    done, failed = 0, []
    for attempt in sync_all(home, store, workers=workers, timeout=timeout,
                            discovery_timeout=discovery_timeout, relay=relay):
        _passed(attempt.passed, as_json)
        render_sync(attempt.outcome, attempt.address, as_json, error=attempt.error,
                    quiet=attempt.outcome is not None and not as_json,
                    address_from=attempt.address_from, peer=attempt.peer)
        if attempt.outcome is not None and not attempt.outcome.key_conflict:
            render_key_alarms(store, as_json, only=attempt.outcome.peer.fingerprint)
        if attempt.outcome is not None:
            done += 1
        elif attempt.peer is not None:
            failed.append(attempt.peer.name)
    seconds = time.perf_counter() - start
    total = done + len(failed)
    if as_json:
        emit_json({"event": "summary", "synced": done, "failed": len(failed),
                   "unreached": failed, "seconds": round(seconds, 3)})
    else:
        click.echo(f"Synced {done} of {total} peers in {seconds:.2f} s.")
    if failed:
        listed = ", ".join(printable(name) for name in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise NetworkError(f"{len(failed)} of {total} peers not synced: {listed}{more} "
                           "(each one's reason is above)")


def _passed(lines: tuple[str, ...], as_json: bool) -> None:
    """The addresses a sync passed over: another device answered there."""
    for line in lines:
        if as_json:
            emit_json({"event": "passed_over", "reason": line})
        else:
            click.echo(f"Passed over {printable(line)}")
