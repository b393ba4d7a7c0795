"""One sync over a trusted connection: tell the peer this device's rotation, hear its own.

Reads top-down: build the machine (with this device's pending rotation unless the peer
already acknowledged it), pump bytes, and for each event do what the store must do —
a peer's checked rotation is judged (certificate profile, store rules) and committed
*before* the machine is told to answer ACCEPTED, and this device's rotation counts as
learned only on the peer's ACCEPTED answer. A crash anywhere leaves either nothing or a
complete, logged record on each side; the next sync repeats whatever is missing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from certpair.errors import CertpairError, NetworkError
from certpair.identity import Identity, fingerprint, load_identity
from certpair.protocol.rotation import (
    Answered,
    RotationOffered,
    RotationToTell,
    StatementRefused,
    SyncDone,
    SyncFailed,
    SyncSession,
)
from certpair.protocol.sync_frames import SyncResult
from certpair.rotation.checks import check_successor
from certpair.rotation.pending import PendingRotation, load_pending
from certpair.store import Peer, Refusal, SuccessorVerdict, TrustStore

__all__ = ["SYNC_REQUEST", "SyncNotSupported", "SyncOutcome", "run_sync"]

# The line a client sends on a `serve` connection to start a sync (docs/PROTOCOL.md §8).
SYNC_REQUEST = b"sync\n"

Recv = Callable[[int], bytes]
Send = Callable[[bytes], None]


class SyncNotSupported(NetworkError):
    """The other side's ``serve`` predates sync: it answered the request line as a ping."""


@dataclass(frozen=True, kw_only=True)
class SyncOutcome:
    """What one sync did.

    ``told`` is the peer's answer to this device's rotation (None: nothing to tell);
    ``heard`` the answer this device gave to the peer's rotation (None: it had none);
    ``new_fingerprint`` the certificate told (if any), ``peer_new_fingerprint`` the one
    heard; ``key_conflict``: the rotation heard differs from the one already stored for
    this peer, both signed by its key (the peer is marked: its key may be stolen).
    """

    peer: Peer
    told: SyncResult | None = None
    heard: SyncResult | None = None
    new_fingerprint: str | None = None
    peer_new_fingerprint: str | None = None
    key_conflict: bool = False


def run_sync(recv: Recv, send: Send, *, peer: Peer, peer_cert: bytes, home: Path,
             store: TrustStore, remote: str, initiator: bool) -> SyncOutcome:
    """Run the sync exchange on a connection whose peer was verified.

    Args:
        recv: reads up to n bytes (b"" at the end); the connection's timeout bounds it.
        send: writes all bytes.
        peer: the stored peer of this connection.
        peer_cert: its certificate as observed on this connection (DER).
        home: certpair's home (identity and pending rotation).
        store: the open trust store.
        remote: the peer's address, for the log.
        initiator: True on the side that sent :data:`SYNC_REQUEST` (it sends it here).

    Returns:
        What was told and heard.

    Raises:
        SyncNotSupported: the server answered like an old ``serve``.
        NetworkError: the connection broke or the peer broke the protocol.
        LocalStateError: the store or the identity is unusable.
    """
    identity = load_identity(home)
    pending = load_pending(home)
    rotation = _to_tell(identity, pending, peer, store)
    session = SyncSession(own_cert=identity.cert_der, peer_cert=peer_cert,
                          nonce=secrets.token_bytes(32), rotation=rotation)
    session.start()
    send((SYNC_REQUEST if initiator else b"") + session.data_to_send())
    told: SyncResult | None = None
    heard: SyncResult | None = None
    heard_fp: str | None = None
    conflict = False
    first = initiator
    while True:
        data = recv(16384)
        if first and data[:1] == b"{":
            raise SyncNotSupported(f"{remote} runs a certpair serve without sync")
        first = False
        events = session.receive_data(data) if data else [
            session.connection_lost() or SyncFailed(reason="connection lost")]
        while events:
            event = events.pop(0)
            if isinstance(event, RotationOffered):
                heard_fp = fingerprint(event.new_cert)
                own = [identity.cert_der] + ([pending.cert_der] if pending else [])
                heard, conflict = _judge(store, peer, peer_cert, event.new_cert, remote, own)
                events += session.accept() if heard is SyncResult.ACCEPTED else (
                    session.refuse(heard))
            elif isinstance(event, StatementRefused):
                heard = event.result
                _log(store, peer, remote, "peer", "refused", event.result.text)
            elif isinstance(event, Answered) and event.told:
                told = event.result
                assert pending is not None
                if told is SyncResult.ACCEPTED:
                    store.record_told(pending.fingerprint, peer, remote=remote)
                else:
                    _log(store, peer, remote, "rotating", "refused by peer", told.text)
            elif isinstance(event, SyncFailed):
                raise NetworkError(f"sync with {remote} failed: {event.reason}")
            elif isinstance(event, SyncDone):
                send(session.data_to_send())
                return SyncOutcome(peer=peer, told=told, heard=heard,
                                   new_fingerprint=pending.fingerprint if rotation and pending
                                   else None, peer_new_fingerprint=heard_fp,
                                   key_conflict=conflict)
        # Only after the events above were committed: the answers go out.
        out = session.data_to_send()
        if out:
            send(out)


def _to_tell(identity: Identity, pending: PendingRotation | None, peer: Peer,
             store: TrustStore) -> RotationToTell | None:
    if pending is None or peer.fingerprint in store.told_peers(pending.fingerprint):
        return None
    return RotationToTell(old_key=identity.key, new_key=pending.key, new_cert=pending.cert_der)


def _judge(store: TrustStore, peer: Peer, peer_cert: bytes, new_cert: bytes,
           remote: str, own: list[bytes]) -> tuple[SyncResult, bool]:
    """Check the peer's new certificate and store it (the store refuses one carrying
    another peer's names or this device's own, ``own``); the answer to give, and
    whether it was a second, different rotation signed by the peer's key."""
    try:
        check_successor(new_cert)
    except CertpairError as exc:
        _log(store, peer, remote, "peer", "refused", str(exc))
        return SyncResult.CERTIFICATE_REFUSED, False
    try:
        store.learn_successor(fingerprint(peer_cert), new_cert, remote=remote,
                              reserved=own)
    except SuccessorVerdict as verdict:
        result = _ANSWER[verdict.reason]
        _log(store, peer, remote, "peer", "refused", result.text)
        return result, verdict.key_conflict
    return SyncResult.ACCEPTED, False


# Each store refusal's answer on the wire, spelled out (not matched by name): a member
# added to one enum and not here fails the exhaustiveness test, a rename fails mypy.
_ANSWER: dict[Refusal, SyncResult] = {
    Refusal.CERTIFICATE_REFUSED: SyncResult.CERTIFICATE_REFUSED,
    Refusal.NOT_A_PEER: SyncResult.NOT_A_PEER,
    Refusal.CONFLICT: SyncResult.CONFLICT,
}


def _log(store: TrustStore, peer: Peer, remote: str, role: str, outcome: str,
         reason: str) -> None:
    store.record_event(kind="rotation", role=role, remote=remote, mode=peer.mode,
                       outcome=outcome, reason=reason, peer_fingerprint=peer.fingerprint,
                       peer_name=peer.name)
