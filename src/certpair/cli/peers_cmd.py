"""``certpair peers``: the trusted peers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json, store_of
from certpair.cli.render import TERMINAL_COLUMNS, Columns
from certpair.cli.terminal import printable

if TYPE_CHECKING:
    from certpair.store import TrustStore

__all__ = ["NAME_COLUMNS", "command"]

# Names are up to 64 bytes and chosen by the peer: cut in the table (the JSON has them
# whole), so that the fingerprints stay aligned.
NAME_COLUMNS = 24
# Fixed widths, so that rows are printed as they are read, page by page, however many
# peers there are. By default a line fits 80 columns: the fingerprint is cut after 15 hex
# digits (more than `unpair` needs to pick a device), the date shown without the time;
# --wide prints everything whole (a fingerprint is 71 characters, a time 20).
_HEADERS = ("NAME", "FINGERPRINT", "MODE", "PAIRED", "STATE")
_NARROW = Columns(_HEADERS, (20, 23, 5, 10), fit=TERMINAL_COLUMNS)
_WIDE = Columns(_HEADERS, (NAME_COLUMNS, 71, 5, 20))


@click.command("peers", short_help="List the devices this one trusts.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              show_default="all", help="Show at most N devices.")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N",
              show_default=True, help="Skip the first N devices (oldest pairing first).")
@click.option("--wide", is_flag=True,
              help="Print every field whole (lines wider than 80 columns).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, limit: int | None, offset: int, wide: bool,
            as_json: bool) -> None:
    """List the devices this one trusts: name, fingerprint, mode, when paired (UTC), and
    whether both sides know the pairing completed (an unconfirmed one settles on the
    next ping or serve connection), and a key rotation pending or completed. A name that
    mixes scripts (a look-alike of another name) is marked, and so is a device whose key
    signed two different rotations (its key may be stolen: unpair it and pair again).

    Lines fit 80 columns: long names and fingerprints are cut with an ellipsis (--wide
    or --json print them whole), and control or escape characters in a name are shown
    as escapes (\\x1b).

    \b
    Examples:
      certpair peers
      certpair peers --limit 20 --offset 20 --json
    """
    from certpair.names import is_mixed_script  # noqa: PLC0415  # fast start-up
    from certpair.store.anchors import anchor_problem  # noqa: PLC0415  # fast start-up

    store = store_of(ctx, read_only=True)
    rotations = _rotations(store)
    alarms = _alarms(store)
    # Streamed page by page: memory and time to the first line do not grow with the store.
    peers = (store.iter_peers() if limit is None and offset == 0
             else iter(store.peers_page(limit=limit, offset=offset)))
    shown = 0
    for peer in peers:
        flagged = anchor_problem(peer.cert_der)
        rotation = rotations.get(peer.fingerprint)
        alarm = alarms.get(peer.fingerprint)
        mixed = is_mixed_script(peer.name)
        if as_json:
            emit_json({"name": peer.name, "fingerprint": peer.fingerprint, "mode": peer.mode,
                       "paired_at": peer.paired_at, "confirmed": peer.confirmed,
                       "flagged": flagged, "rotation": rotation, "intact": peer.intact,
                       "mixed_script": mixed, "key_conflict": alarm})
        else:
            columns = _WIDE if wide else _NARROW
            if not shown:
                click.echo(columns.header())
            state = _state(peer.confirmed, rotation, wide=wide, mixed=mixed,
                           alarm=alarm is not None)
            if not peer.intact:
                state = "CORRUPT"
                click.echo(f"Warning: the stored row of {printable(peer.name)} is corrupt: its "
                           "fingerprint does not match its certificate; it is not exported. "
                           f"Remove it with 'certpair unpair {peer.fingerprint}' and pair "
                           "again.", err=True)
            paired = peer.paired_at if wide else peer.paired_at[:10]
            click.echo(columns.row((peer.name, peer.fingerprint, peer.mode, paired, state)))
            if alarm:
                click.echo(f"Warning: {printable(peer.name)} signed two different key rotations "
                           "with one key: its key may be stolen. Unpair it ('certpair unpair "
                           f"{peer.fingerprint}') and pair again.", err=True)
            if flagged is not None:
                click.echo(f"Warning: {printable(peer.name)} is not trusted: its certificate "
                           f"could sign others ({flagged}); unpair it and pair again.", err=True)
        shown += 1
    if not shown and not as_json:
        click.echo("No paired devices yet." if offset == 0 else "No more paired devices.")


def _alarms(store: TrustStore) -> dict[str, dict[str, str]]:
    """The peers whose key signed two different rotations, by fingerprint."""
    from certpair.store import StoreUnusable  # noqa: PLC0415  # fast start-up

    try:
        alarms = store.key_alarms()
    except StoreUnusable:
        return {}  # a read-only store from before the marks
    return {a.peer_fingerprint: {"kept_successor": a.kept_successor,
                                 "refused_successor": a.other_successor, "seen_at": a.seen_at}
            for a in alarms}


def _state(confirmed: bool, rotation: dict[str, Any] | None, *, wide: bool, mixed: bool,
           alarm: bool) -> str:
    """The STATE cell: short words by default (a warning first), the hints and
    fingerprints with --wide."""
    if not wide:
        if alarm:
            return "KEY CONFLICT"
        if mixed:
            return "MIXED SCRIPTS"
        if not confirmed:
            return "unconfirmed"
        if rotation:
            return "rotating" if rotation["state"] == "pending" else "rotated"
        return "confirmed"
    state = "confirmed" if confirmed else "unconfirmed (settle with ping/serve)"
    if rotation and rotation["state"] == "pending":
        state += f"; rotating to {rotation['successor'][:23]}…"
    elif rotation:
        state += f"; rotated from {rotation['previous'][:23]}…"
    if mixed:
        state += "; NAME MIXES SCRIPTS (a look-alike?)"
    if alarm:
        state += "; KEY CONFLICT: two rotations signed by its key"
    return state


def _rotations(store: TrustStore) -> dict[str, dict[str, Any]]:
    """Each peer's key rotation, pending or completed, by its current fingerprint."""
    from certpair.store import StoreUnusable  # noqa: PLC0415  # fast start-up

    try:
        successors = store.successors()
    except StoreUnusable:
        return {}  # a read-only store from before key rotation
    rotations: dict[str, dict[str, Any]] = {}
    for successor in successors:
        if successor.state == "pending":
            rotations[successor.peer_fingerprint] = {
                "state": "pending", "successor": successor.fingerprint,
                "learned_at": successor.learned_at}
        else:
            rotations[successor.fingerprint] = {
                "state": "completed", "previous": successor.peer_fingerprint,
                "completed_at": successor.completed_at}
    return rotations
