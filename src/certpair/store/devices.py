"""Devices: a paired peer's identity that survives its key rotations.

A peer's fingerprint changes when it rotates its key; what long-lived things hold on to
(``tunnel serve --allow``, a tunnel's trusted set, a pinned context, log lookups) is
the peer's **device id** instead: 32 random hex digits given to its row when it is first
stored (a trigger gives one to a row inserted without it, whichever code inserts it), kept by
every rotation (the row's fingerprint and certificate change in place), and copied
onto each of its successors (pending and completed), so the certificates a device has
had hang off it. Unpairing ends the device; pairing the same device again gives a
new id.
"""

from __future__ import annotations

import sqlite3

from certpair.store import peers as peers_sql
from certpair.store.base import StoreBase
from certpair.store.records import Peer

__all__ = ["MIGRATION_DEVICES", "DeviceReads"]

# Schema step (see store.schema): the device id on peers and on successors, and the
# trigger that gives every new peer row one. Existing successors get their device's id
# by following the chain of completed rotations back from each peer's current
# certificate.
MIGRATION_DEVICES = """
ALTER TABLE peers ADD COLUMN device_id TEXT;
UPDATE peers SET device_id = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX peers_by_device ON peers (device_id);
CREATE TRIGGER peers_device_id AFTER INSERT ON peers WHEN NEW.device_id IS NULL BEGIN
    UPDATE peers SET device_id = lower(hex(randomblob(16))) WHERE rowid = NEW.rowid;
END;
ALTER TABLE successors ADD COLUMN device_id TEXT;
WITH RECURSIVE chain (fingerprint, device_id) AS (
    SELECT fingerprint, device_id FROM peers
    UNION
    SELECT s.peer_fingerprint, chain.device_id FROM successors s
    JOIN chain ON s.fingerprint = chain.fingerprint WHERE s.state = 'completed'
)
UPDATE successors SET device_id = (
    SELECT chain.device_id FROM chain WHERE chain.fingerprint = successors.peer_fingerprint);
CREATE INDEX successors_by_device ON successors (device_id);
"""


class DeviceReads(StoreBase):
    """The device-id reads of :class:`~certpair.store.TrustStore`."""

    def peer_by_device(self, device_id: str) -> Peer | None:
        """Return the paired device with this device id (under its current
        certificate), or None if it is not paired (any more).

        Raises:
            StoreUnusable: the read failed.
        """
        try:
            with self._lock:
                found = peers_sql.select_peers(self._db, "WHERE device_id = ?", (device_id,))
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return found[0] if found else None

    def device_fingerprints(self, device_id: str) -> dict[str, str]:
        """Every certificate this store has known for a device, by fingerprint:
        ``current``, ``pending`` (a successor learned, not yet used) or ``former`` (a
        certificate a completed rotation replaced). Empty for an unknown device.

        Raises:
            StoreUnusable: the read failed.
        """
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT fingerprint, 'current' FROM peers WHERE device_id = ?"
                    " UNION ALL SELECT fingerprint, 'pending' FROM successors"
                    " WHERE device_id = ? AND state = 'pending'"
                    " UNION ALL SELECT peer_fingerprint, 'former' FROM successors"
                    " WHERE device_id = ? AND state = 'completed'",
                    (device_id, device_id, device_id)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        found: dict[str, str] = {}
        for fp, state in rows:
            found.setdefault(fp, state)
        return found

    def device_of_fingerprint(self, fingerprint_: str) -> str | None:
        """The device id a certificate belongs or belonged to (a peer's current one,
        a pending successor, or one a rotation replaced), or None.

        Raises:
            StoreUnusable: the read failed.
        """
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT device_id FROM peers WHERE fingerprint = ?"
                    " UNION ALL SELECT device_id FROM successors WHERE fingerprint = ?"
                    " UNION ALL SELECT device_id FROM successors WHERE peer_fingerprint = ?"
                    " LIMIT 1", (fingerprint_, fingerprint_, fingerprint_)).fetchone()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return None if row is None or row[0] is None else str(row[0])
