"""The commit of a pairing, in the one order both drivers follow.

Trust is written only on the machine's ``Paired`` event, and the machine is told how the
write went (``committed()`` or ``commit_failed()``) before the driver sends anything
more, so what the peer hears always matches what this side stored: the offerer's word
(m2 or ``COMMITTED``) only after its row is durable, ``ERROR(STORE_FAILED)`` when it is
not (docs/PROTOCOL.md §6a). Every event the machine returns, including those that follow
the commit (frames that arrived behind the proof), goes back to the driver in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from certpair.profile import CertificateRefused
from certpair.protocol.events import Paired
from certpair.protocol.machine import Event, SessionBase
from certpair.store import Peer, StoreUnusable

__all__ = ["Commitment", "commit_on_paired"]


@dataclass
class Commitment:
    """What became of the events of one step of a session."""

    events: list[Event] = field(default_factory=list)
    """The session's events, ``Paired`` replaced by what the commit led to."""
    peer: Peer | None = None
    """The peer stored by this step, if a ``Paired`` came and the write succeeded."""
    error: StoreUnusable | CertificateRefused | None = None
    """The write failed (the session was told: the peer hears ``ERROR(7)``)."""


def commit_on_paired(session: SessionBase, events: list[Event],
                     store_peer: Callable[[Paired], Peer]) -> Commitment:
    """Store the peer of each ``Paired`` in ``events`` and tell the session how it went.

    Args:
        session: the machine that returned ``events``.
        events: what it returned.
        store_peer: writes the peer (one durable transaction) and returns it; raises
            ``StoreUnusable``, or ``CertificateRefused`` when a racing pairing stored a
            device with the same names meanwhile.

    Returns:
        The events to act on, in order, with the stored peer or the write's error.
    """
    done = Commitment()
    queue = list(events)
    while queue:
        event = queue.pop(0)
        if not isinstance(event, Paired):
            done.events.append(event)
            continue
        try:
            done.peer = store_peer(event)
        except (StoreUnusable, CertificateRefused) as exc:
            done.error = exc
            done.events.append(session.commit_failed())
            continue
        queue += session.committed()
    return done
