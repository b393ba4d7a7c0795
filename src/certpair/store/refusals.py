"""The audit log's writes that trust nobody: single events, and refusals counted per
source host, reason and minute (so a flood of refused traffic is one row).

A part of :class:`~certpair.store.trust.TrustStore` (see :mod:`~certpair.store.base`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from certpair.store import events as events_sql
from certpair.store.base import StoreBase
from certpair.store.records import Event, iso_time

__all__ = ["EventRecords"]


class EventRecords(StoreBase):
    """Appending events and counting refusals."""

    def record_event(
        self, *, kind: str, role: str, remote: str, mode: str, outcome: str, reason: str,
        peer_fingerprint: str | None = None, peer_name: str | None = None,
        at: float | None = None,
    ) -> None:
        """Append an event that trusts nobody (a failure, a refusal, a connection).

        Raises:
            StoreUnusable: the write failed.
        """
        event = Event(
            at=iso_time(time.time() if at is None else at), kind=kind, role=role,
            remote=remote, mode=mode, outcome=outcome, reason=reason,
            peer_fingerprint=peer_fingerprint, peer_name=peer_name,
        )
        self.record_events([event])

    def record_events(self, events: Sequence[Event]) -> None:
        """Append events that trust nobody, all in one transaction (a busy tunnel logs
        its connections so: one commit per batch, not per connection).

        Raises:
            StoreUnusable: the write failed (none of them is written).
        """
        try:
            with self._lock, self._db:
                for event in events:
                    events_sql.add_event(self._db, event)  # a connection: counted per minute
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def record_refusal(
        self, *, kind: str, role: str, remote: str, reason: str, mode: str,
        outcome: str = "refused", count: int = 1, at: float | None = None,
    ) -> None:
        """Count ``count`` refusals of unauthenticated traffic from ``remote`` (its port,
        if any, is dropped): one row per source host, reason and minute, counted up.

        Raises:
            StoreUnusable: the write failed.
        """
        event = Event(
            at=iso_time(time.time() if at is None else at), kind=kind, role=role,
            remote=events_sql.host_of(remote), mode=mode, outcome=outcome, reason=reason,
            count=count,
        )
        try:
            with self._lock, self._db:
                events_sql.add_refusal(self._db, event)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
