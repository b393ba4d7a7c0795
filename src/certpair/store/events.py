"""The audit log's SQL: append an event, fold traffic into its minute's row, read the
newest events, and keep the log under its row caps.

Rows are of two kinds, each with its own budget (``events.traffic``):

* **traffic**: what connections cause, and anyone can repeat: refusals (refused
  connections, pairing attempts that failed without spending a guess) and every
  ``connection`` row (accepted, failed, probes). They are aggregated: one row per
  (kind, role, source host, mode, outcome, reason, peer) per UTC minute, with a
  ``count``, so a paired device's connections are counted per minute as refusals are.
* **records**: what a person did or must see: pairings, unpairings, renames,
  rotations, confirmations, guesses that spent a code, key-theft warnings.

Each kind keeps at most ``max_rows`` rows, the oldest of that kind going first: no
amount of traffic evicts a record.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3

from certpair.addresses import host_of
from certpair.store.records import Event, StoreUnusable

__all__ = [
    "DEFAULT_MAX_ROWS", "MAX_ROWS_VARIABLE", "MIGRATION_6", "MIGRATION_9", "add_event",
    "add_refusal", "host_of", "insert_event", "is_traffic", "max_rows", "prune",
    "select_events",
]

# Each budget's row cap: CERTPAIR_LOG_MAX_ROWS, else 100,000 rows (some 15 MB each).
DEFAULT_MAX_ROWS = 100_000
MAX_ROWS_VARIABLE = "CERTPAIR_LOG_MAX_ROWS"

# 6: events.count (how many refusals one row stands for) and the index that finds the
# row of a refusal's minute.
MIGRATION_6 = """
ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
CREATE INDEX events_by_source ON events (remote, reason, at);
"""

# 9: events.traffic (1: a row of the traffic budget, 0: a record; see the module docs)
# and the index each budget is counted and pruned by. Older rows: connections and
# counted rows are traffic.
MIGRATION_9 = """
ALTER TABLE events ADD COLUMN traffic INTEGER NOT NULL DEFAULT 0;
UPDATE events SET traffic = 1 WHERE kind = 'connection' OR count > 1;
CREATE INDEX events_by_budget ON events (traffic, id);
"""


def max_rows() -> int:
    """The log's row cap (see the module docs).

    Raises:
        StoreUnusable: CERTPAIR_LOG_MAX_ROWS is set but not a positive integer.
    """
    value = os.environ.get(MAX_ROWS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_ROWS
    if not value.isdigit() or int(value) < 1:
        raise StoreUnusable(f"{MAX_ROWS_VARIABLE} must be a positive number of rows")
    return int(value)


def is_traffic(event: Event) -> bool:
    """Whether ``event`` belongs to the traffic budget (see the module docs)."""
    return event.kind == "connection"


def insert_event(db: sqlite3.Connection, event: Event, *, traffic: bool = False) -> int:
    """Append ``event`` (a record, unless ``traffic``) inside the caller's transaction and
    keep the row caps; return the new row's id.

    The caps are checked every ``cap // 10`` inserts (at most every 100): cheap, and
    neither budget grows past its cap by more than that.
    """
    cap = max_rows()
    cursor = db.execute(
        "INSERT INTO events (at, kind, role, remote, mode, outcome, reason,"
        " peer_fingerprint, peer_name, count, traffic)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.at, event.kind, event.role, event.remote, event.mode, event.outcome,
            event.reason, event.peer_fingerprint, event.peer_name, event.count, int(traffic),
        ),
    )
    row = cursor.lastrowid or 0
    if row % max(1, min(100, cap // 10)) == 0:
        prune(db, cap)
    return row


def add_event(db: sqlite3.Connection, event: Event) -> int:
    """Log ``event``: traffic is counted into its minute's row (:func:`add_refusal`, with
    the port dropped), a record is a row of its own. Returns as those do."""
    if is_traffic(event):
        return add_refusal(db, dataclasses.replace(event, remote=host_of(event.remote)))
    return insert_event(db, event)


def add_refusal(db: sqlite3.Connection, event: Event) -> int:
    """Add ``event.count`` to the traffic row of ``event``'s key (its peer included) and
    minute, or insert one.

    Returns the new row's id, or 0 when an existing row was counted up.
    """
    minute = event.at[:16]  # YYYY-MM-DDTHH:MM
    row = db.execute(
        "SELECT id FROM events WHERE remote = ? AND reason = ? AND at >= ? AND at <= ?"
        " AND kind = ? AND role = ? AND mode = ? AND outcome = ?"
        " AND peer_fingerprint IS ? AND traffic = 1 ORDER BY id DESC LIMIT 1",
        (event.remote, event.reason, f"{minute}:00Z", f"{minute}:59Z", event.kind,
         event.role, event.mode, event.outcome, event.peer_fingerprint),
    ).fetchone()
    if row is not None:
        db.execute("UPDATE events SET count = count + ? WHERE id = ?", (event.count, row[0]))
        return 0
    return insert_event(db, event, traffic=True)


def prune(db: sqlite3.Connection, max_rows: int) -> None:
    """Delete the oldest rows beyond ``max_rows`` in each budget, that budget's own."""
    for traffic in (1, 0):
        excess = db.execute("SELECT count(*) FROM events WHERE traffic = ?",
                            (traffic,)).fetchone()[0] - max_rows
        if excess > 0:
            db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events"
                       " WHERE traffic = ? ORDER BY id LIMIT ?)", (traffic, excess))


def select_events(db: sqlite3.Connection, limit: int | None, offset: int = 0) -> list[Event]:
    """Return up to ``limit`` events (all if None), newest first, skipping ``offset``."""
    rows = db.execute(
        "SELECT at, kind, role, remote, mode, outcome, reason, peer_fingerprint,"
        " peer_name, count FROM events ORDER BY id DESC LIMIT ? OFFSET ?",
        (-1 if limit is None else limit, offset),
    ).fetchall()
    return [
        Event(at=a, kind=k, role=r, remote=rm, mode=m, outcome=o, reason=re_,
              peer_fingerprint=pf, peer_name=pn, count=c)
        for a, k, r, rm, m, o, re_, pf, pn, c in rows
    ]
