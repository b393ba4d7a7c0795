"""Where this device's rotation stands: which peers have learned the new certificate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from certpair.errors import LocalStateError
from certpair.identity import Identity, load_identity
from certpair.rotation.pending import (
    NoRotationPending,
    PendingRotation,
    abort_rotation,
    finish_rotation,
    load_pending,
)
from certpair.store import Peer, TrustStore

__all__ = ["PeersNotTold", "RotationStatus", "abort", "finish", "rotation_status"]


class PeersNotTold(LocalStateError):
    """Some peers have not learned the new certificate yet (the message names them)."""


@dataclass(frozen=True, kw_only=True)
class RotationStatus:
    """This device's identity, its pending rotation, and the peers on each side."""

    identity: Identity
    pending: PendingRotation | None
    learned: list[Peer] = field(default_factory=list)
    missing: list[Peer] = field(default_factory=list)


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
            f"{len(status.missing)} peer(s) have not learned the new certificate: "
            f"{_named(status.missing)}; run 'certpair sync --all' (or ping them), "
            "or use --force: they will refuse this device until paired again")
    finish_rotation(home)
    store.record_event(kind="rotation", role="local", remote="", mode="", outcome="finished",
                       reason=f"now {status.pending.fingerprint}, was "
                              f"{status.identity.fingerprint}")
    return status


def abort(home: Path, store: TrustStore, *, force: bool) -> RotationStatus:
    """Drop the pending key; unless ``force``, only while no peer has learned it.

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
            f"{len(status.learned)} peer(s) already learned the new certificate: "
            f"{_named(status.learned)}; they would refuse any later rotation of this "
            "device; finish it instead, or use --force")
    abort_rotation(home)
    store.forget_told(status.pending.fingerprint)
    store.record_event(kind="rotation", role="local", remote="", mode="", outcome="aborted",
                       reason=f"dropped {status.pending.fingerprint}")
    return status
