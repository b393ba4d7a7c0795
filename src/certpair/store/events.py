"""The audit log's SQL: append an event, read the newest ones."""

from __future__ import annotations

import sqlite3

from certpair.store.records import Event

__all__ = ["insert_event", "select_events"]


def insert_event(db: sqlite3.Connection, event: Event) -> None:
    """Append ``event`` inside the caller's transaction."""
    db.execute(
        "INSERT INTO events (at, kind, role, remote, mode, outcome, reason,"
        " peer_fingerprint, peer_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.at, event.kind, event.role, event.remote, event.mode, event.outcome,
            event.reason, event.peer_fingerprint, event.peer_name,
        ),
    )


def select_events(db: sqlite3.Connection, limit: int | None, offset: int = 0) -> list[Event]:
    """Return up to ``limit`` events (all if None), newest first, skipping ``offset``."""
    rows = db.execute(
        "SELECT at, kind, role, remote, mode, outcome, reason, peer_fingerprint,"
        " peer_name FROM events ORDER BY id DESC LIMIT ? OFFSET ?",
        (-1 if limit is None else limit, offset),
    ).fetchall()
    return [
        Event(at=a, kind=k, role=r, remote=rm, mode=m, outcome=o, reason=re_,
              peer_fingerprint=pf, peer_name=pn)
        for a, k, r, rm, m, o, re_, pf, pn in rows
    ]
