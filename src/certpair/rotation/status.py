"""Where this device's rotation stands, and its three steps: start, finish, abort.

Each step acts (files beside the identity) and then records the act in the audit log.
The two cannot share one transaction, so a step that could not record what it did
says both: a start whose row cannot be written is undone (nothing is pending that a
peer could learn); a finish or an abort whose row cannot be written stays done, and
its ``unlogged`` names why the log lacks the row (docs/SECURITY.md, "Failures").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from certpair.errors import LocalStateError, counted
from certpair.identity import Identity, load_identity
from certpair.rotation.pending import (
    NoRotationPending,
    PendingRotation,
    abort_rotation,
    finish_rotation,
    load_pending,
    start_rotation,
)
from certpair.store import Peer, StoreUnusable, TrustStore

__all__ = ["PeersNotTold", "RotationStatus", "abort", "finish", "rotation_status", "start"]


class PeersNotTold(LocalStateError):
    """Some peers have not learned the new certificate yet (the message names them)."""


@dataclass(frozen=True, kw_only=True)
class RotationStatus:
    """This device's identity, its pending rotation, and the peers on each side."""

    identity: Identity
    pending: PendingRotation | None
    learned: list[Peer] = field(default_factory=list)
    missing: list[Peer] = field(default_factory=list)
    # Set when the step was done but its audit-log row could not be written: why.
    unlogged: str | None = None


def rotation_status(home: Path, store: TrustStore) -> RotationStatus:
    """Return the rotation status of ``home``.

    Raises:
        NotInitialised, LocalStateError: no identity, or unusable files or store.
    """
    identity = load_identity(home)
    pending = load_pending(home)
    if pending is None:
        return RotationStatus(identity=identity, pending=None)
    told = store.told_peers(pending.fingerprint)
    peers = store.peers()
    return RotationStatus(identity=identity, pending=pending,
                          learned=[p for p in peers if p.fingerprint in told],
                          missing=[p for p in peers if p.fingerprint not in told])


def _named(peers: list[Peer]) -> str:
    listed = ", ".join(f"{p.name} ({p.fingerprint[:19]})" for p in peers[:10])
    return listed + (f" and {len(peers) - 10} more" if len(peers) > 10 else "")


def finish(home: Path, store: TrustStore, *, force: bool) -> RotationStatus:
    """Switch to the pending identity; unless ``force``, only once every peer learned it.

    A switch whose log row cannot be written stays done: ``unlogged`` says why.

    Raises:
        NoRotationPending: nothing is pending.
        PeersNotTold: peers have not learned it and ``force`` is false (nothing changed).
        LocalStateError: the files cannot be replaced.
    """
    status = rotation_status(home, store)
    if status.pending is None:
        raise NoRotationPending("no rotation is pending (start one with 'certpair rotate')")
    if status.missing and not force:
        raise PeersNotTold(
            f"{counted(len(status.missing), 'peer')} "
            f"{'has' if len(status.missing) == 1 else 'have'} not learned the new certificate: "
            f"{_named(status.missing)}; run 'certpair sync --all' (or ping them), "
            "or use --force: they will refuse this device until paired again")
    finish_rotation(home)
    return _record(store, status, "finished", f"now {status.pending.fingerprint}, was "
                                              f"{status.identity.fingerprint}")


def abort(home: Path, store: TrustStore, *, force: bool) -> RotationStatus:
    """Drop the pending key; unless ``force``, only while no peer has learned it.

    A drop whose log row cannot be written stays done: ``unlogged`` says why.

    Peers that learned it keep it as this device's pending successor, and refuse any
    other rotation of this device (the first one stored wins), so a later rotation would
    fail with them until they pair again.

    Raises:
        NoRotationPending: nothing is pending.
        PeersNotTold: peers learned it and ``force`` is false (nothing changed).
        LocalStateError: the files cannot be removed.
    """
    status = rotation_status(home, store)
    if status.pending is None:
        raise NoRotationPending("no rotation is pending")
    if status.learned and not force:
        raise PeersNotTold(
            f"{counted(len(status.learned), 'peer')} already learned the new certificate: "
            f"{_named(status.learned)}; they would refuse any later rotation of this "
            "device; finish it instead, or use --force")
    abort_rotation(home)
    # Which peers were told matters no more: rows a failed write leaves are inert
    # (no pending rotation will have that fingerprint again).
    with contextlib.suppress(StoreUnusable):
        store.forget_told(status.pending.fingerprint)
    return _record(store, status, "aborted", f"dropped {status.pending.fingerprint}")


def start(home: Path, store: TrustStore) -> RotationStatus:
    """Make a new key and certificate, pending, and record it: both or neither.

    Returns:
        The status: the identity and the new pending rotation (no peer learned it yet).

    Raises:
        NotInitialised: no identity.
        RotationPending: a rotation is already pending.
        LocalStateError: the files or the log row cannot be written (then nothing is
            pending: the new files are removed again).
    """
    identity, pending = start_rotation(home)
    try:
        store.record_event(kind="rotation", role="local", remote="", mode="",
                           outcome="started", reason=f"pending {pending.fingerprint}")
    except LocalStateError as exc:
        abort_rotation(home)
        raise StoreUnusable(f"{exc}; no rotation was started") from exc
    return RotationStatus(identity=identity, pending=pending)


def _record(store: TrustStore, status: RotationStatus, outcome: str,
            reason: str) -> RotationStatus:
    """Log a step already done; a failure is returned in ``unlogged``, never raised."""
    try:
        store.record_event(kind="rotation", role="local", remote="", mode="",
                           outcome=outcome, reason=reason)
    except LocalStateError as exc:
        return replace(status, unlogged=str(exc))
    return status
