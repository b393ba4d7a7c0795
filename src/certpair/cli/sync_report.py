"""How ``serve``, ``ping`` and ``sync`` show what a rotation sync did, and the warning
for a peer whose key signed two different rotations (its key may be stolen)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json
from certpair.cli.terminal import printable
from certpair.errors import CertpairError

if TYPE_CHECKING:
    from certpair.rotation.exchange import SyncOutcome
    from certpair.store import Peer, TrustStore

__all__ = ["key_alarm_lines", "render_key_alarms", "render_sync", "sync_fields",
           "sync_lines"]

_ADVICE = "its key may be stolen: unpair it and pair again"


def _alarm_line(peer: Peer, as_json: bool, *, kept: str | None,
                other: str) -> dict[str, Any] | str:
    from certpair.cli.terminal import printable  # noqa: PLC0415  # keeps start-up fast

    if as_json:
        return {"event": "warning", "warning": "key_conflict",
                "peer": {"name": peer.name, "fingerprint": peer.fingerprint},
                "kept_successor": kept, "refused_successor": other, "advice": _ADVICE}
    which = (f"{kept[:23]}... kept, " if kept else "the first one stored kept, ") + (
        f"{other[:23]}... refused")
    return (f"Warning: {printable(peer.name)} ({peer.fingerprint[:23]}...) signed two "
            f"different key rotations ({which}): {_ADVICE} "
            f"(certpair unpair {peer.fingerprint}).")


def key_alarm_lines(store: TrustStore, as_json: bool,
                    only: str | None = None) -> list[dict[str, Any] | str]:
    """One line per marked peer (or for the peer ``only`` only), JSON or text."""
    from certpair.store import StoreUnusable  # noqa: PLC0415  # keeps start-up fast

    try:
        alarms = store.key_alarms()
    except StoreUnusable:
        return []  # a read-only store from before the marks
    lines: list[dict[str, Any] | str] = []
    for alarm in alarms:
        if only is not None and alarm.peer_fingerprint != only:
            continue
        peer = store.peer(alarm.peer_fingerprint)
        if peer is not None:
            lines.append(_alarm_line(peer, as_json, kept=alarm.kept_successor,
                                     other=alarm.other_successor))
    return lines


def render_key_alarms(store: TrustStore, as_json: bool, only: str | None = None) -> None:
    """Print :func:`key_alarm_lines` (text on standard error)."""
    for line in key_alarm_lines(store, as_json, only):
        if isinstance(line, dict):
            emit_json(line)
        else:
            click.echo(line, err=True)


def sync_fields(outcome: SyncOutcome) -> dict[str, Any]:
    """The JSON fields of one sync: what this device told and heard."""
    return {
        "told": outcome.told.name.lower() if outcome.told is not None else None,
        "new_fingerprint": outcome.new_fingerprint,
        "heard": outcome.heard.name.lower() if outcome.heard is not None else None,
        "peer_new_fingerprint": outcome.peer_new_fingerprint,
        "key_conflict": outcome.key_conflict,
    }


def _lines(outcome: SyncOutcome) -> list[str]:
    name = outcome.peer.name
    lines = []
    if outcome.told is not None:
        verdict = "learned" if outcome.told.value == 0 else f"refused ({outcome.told.text})"
        lines.append(f"{name} {verdict} this device's new certificate {outcome.new_fingerprint}")
    if outcome.heard is not None:
        verdict = ("stored as its successor" if outcome.heard.value == 0
                   else f"refused ({outcome.heard.text})")
        lines.append(f"{name} rotates to {outcome.peer_new_fingerprint}: {verdict}")
    return lines


def sync_lines(outcome: SyncOutcome | None, remote: str, as_json: bool, *,
               error: BaseException | None = None, quiet: bool = False,
               address_from: str | None = None,
               peer: Peer | None = None) -> list[dict[str, Any] | str]:
    """One sync's result as output lines, JSON objects or text (``quiet``: none when
    nothing was told or heard).

    ``address_from`` says where the address used came from; ``peer`` names the device
    a failed sync was meant for.
    """
    if error is not None and not isinstance(error, CertpairError):
        # A socket's or OpenSSL's own text is never shown: say what it means.
        from certpair.trusted import connection_error  # noqa: PLC0415

        error = connection_error(error, remote)
    if outcome is None:
        if as_json:
            return [{"event": "sync", "remote": remote, "outcome": "failed",
                     **({} if peer is None else {
                         "peer": {"name": peer.name, "fingerprint": peer.fingerprint}}),
                     "reason": str(error)}]
        who = remote if peer is None else printable(peer.name)
        return [f"Sync with {who} failed: {error}"]
    lines = _lines(outcome)
    if quiet and not lines:
        return []
    warning = ([_alarm_line(outcome.peer, as_json, kept=None,
                            other=outcome.peer_new_fingerprint or "")]
               if outcome.key_conflict else [])
    if as_json:
        return [{"event": "sync", "remote": remote, "outcome": "done",
                 **({"address_from": address_from} if address_from else {}),
                 "peer": {"name": outcome.peer.name, "fingerprint": outcome.peer.fingerprint},
                 **sync_fields(outcome)}, *warning]
    if not lines:
        source = f" (address from {address_from})" if address_from else ""
        return [f"{outcome.peer.name} at {remote}{source}: nothing to sync", *warning]
    via = f" (at {remote}, address from {address_from})" if address_from else ""
    return [line + via for line in lines] + warning


def render_sync(outcome: SyncOutcome | None, remote: str, as_json: bool, *,
                error: BaseException | None = None, quiet: bool = False,
                address_from: str | None = None, peer: Peer | None = None) -> None:
    """Print one sync's result (``quiet``: nothing when nothing was told or heard)."""
    for line in sync_lines(outcome, remote, as_json, error=error, quiet=quiet,
                           address_from=address_from, peer=peer):
        if isinstance(line, dict):
            emit_json(line)
        else:
            click.echo(line)
