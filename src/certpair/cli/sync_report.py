"""How ``serve``, ``ping`` and ``sync`` show what a rotation sync did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json
from certpair.errors import CertpairError

if TYPE_CHECKING:
    from certpair.rotation.exchange import SyncOutcome

__all__ = ["render_sync", "sync_fields", "sync_lines"]


def sync_fields(outcome: SyncOutcome) -> dict[str, Any]:
    """The JSON fields of one sync: what this device told and heard."""
    return {
        "told": outcome.told.name.lower() if outcome.told is not None else None,
        "new_fingerprint": outcome.new_fingerprint,
        "heard": outcome.heard.name.lower() if outcome.heard is not None else None,
        "peer_new_fingerprint": outcome.peer_new_fingerprint,
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
               error: BaseException | None = None,
               quiet: bool = False) -> list[dict[str, Any] | str]:
    """One sync's result as output lines, JSON objects or text (``quiet``: none when
    nothing was told or heard)."""
    if error is not None and not isinstance(error, CertpairError):
        # A socket's or OpenSSL's own text is never shown: say what it means.
        from certpair.trusted import connection_error  # noqa: PLC0415

        error = connection_error(error, remote)
    if outcome is None:
        if as_json:
            return [{"event": "sync", "remote": remote, "outcome": "failed",
                     "reason": str(error)}]
        return [f"Sync with {remote} failed: {error}"]
    lines = _lines(outcome)
    if quiet and not lines:
        return []
    if as_json:
        return [{"event": "sync", "remote": remote, "outcome": "done",
                 "peer": {"name": outcome.peer.name, "fingerprint": outcome.peer.fingerprint},
                 **sync_fields(outcome)}]
    return list(lines or [f"{outcome.peer.name} at {remote}: nothing to sync"])


def render_sync(outcome: SyncOutcome | None, remote: str, as_json: bool, *,
                error: BaseException | None = None, quiet: bool = False) -> None:
    """Print one sync's result (``quiet``: nothing when nothing was told or heard)."""
    for line in sync_lines(outcome, remote, as_json, error=error, quiet=quiet):
        if isinstance(line, dict):
            emit_json(line)
        else:
            click.echo(line)
