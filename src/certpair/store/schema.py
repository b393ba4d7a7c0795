"""The store's file: its schema, its version, and how it is opened and migrated."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path

from certpair.filemodes import check_private, create_private
from certpair.store.address_book import MIGRATION_ADDRESS_BOOK
from certpair.store.anchors import ANCHORS_DIRECTORY, sync_anchors
from certpair.store.devices import MIGRATION_DEVICES
from certpair.store.events import MIGRATION_6, MIGRATION_9, max_rows
from certpair.store.failures import DISK_FULL, describe, disk_full
from certpair.store.identity_keys import MIGRATION_7, fill_identity_keys
from certpair.store.records import StoreUnusable
from certpair.store.successors import MIGRATION_5
from certpair.store.trust import TrustStore

__all__ = ["SCHEMA_VERSION", "STORE_MARKER", "open_store", "open_store_for_reading"]

# 1: peers, events. 2: the peers_version counter and its triggers.
# 3: peers.confirmed (0 while the peer's own commit is unknown; issue 11).
# 4: each peer's subject hash and the anchor directory's pending marks
#    (store/anchors.py), and the index that pages the peers.
# 5: key rotation (successors, rotation_told, peer_addresses, the trusted_certs view;
#    store/successors.py).
# 6: events.count, refusals aggregated per source, reason and minute (store/events.py).
# 7: identity_keys (one device, one identity: each subject and certificate name held
#    by one peer), peer_names (names as people read them, for "name (2)") and
#    key_alarms (store/identity_keys.py); filled from the stored certificates.
# 8: device ids on peers and successors (store/devices.py).
# 9: events.traffic, the audit log's two budgets: traffic never evicts a record
#    (store/events.py).
# 10: the address book (store/address_book.py), keyed by device id; it takes over step
#     5's peer_addresses.
SCHEMA_VERSION = 10
_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    fingerprint TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    cert_der    BLOB NOT NULL,
    mode        TEXT NOT NULL,
    paired_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    role        TEXT NOT NULL,
    remote      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    peer_fingerprint TEXT,
    peer_name   TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('peers_version', 0);
CREATE TRIGGER IF NOT EXISTS peers_inserted AFTER INSERT ON peers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
END;
CREATE TRIGGER IF NOT EXISTS peers_updated AFTER UPDATE ON peers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
END;
CREATE TRIGGER IF NOT EXISTS peers_deleted AFTER DELETE ON peers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'peers_version';
END;
"""
# Numbered steps, each run once in order on a store older than it. Never edit a step;
# add one. Step 2 is the whole schema above (idempotent: it also brings a v1 store up).
_STEPS: tuple[tuple[int, str], ...] = (
    (2, _SCHEMA),
    (3, "ALTER TABLE peers ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1;"),
    (4, """
ALTER TABLE peers ADD COLUMN subject_hash TEXT;
CREATE INDEX peers_by_subject_hash ON peers (subject_hash);
CREATE INDEX peers_by_pairing ON peers (paired_at, fingerprint);
CREATE TABLE anchor_pending (
    subject_hash TEXT PRIMARY KEY,
    token        BLOB NOT NULL
);
CREATE TRIGGER anchors_inserted AFTER INSERT ON peers BEGIN
    INSERT OR REPLACE INTO anchor_pending VALUES (coalesce(NEW.subject_hash, ''), randomblob(8));
END;
CREATE TRIGGER anchors_deleted AFTER DELETE ON peers BEGIN
    INSERT OR REPLACE INTO anchor_pending VALUES (coalesce(OLD.subject_hash, ''), randomblob(8));
END;
CREATE TRIGGER anchors_updated AFTER UPDATE OF cert_der, subject_hash ON peers BEGIN
    INSERT OR REPLACE INTO anchor_pending VALUES (coalesce(OLD.subject_hash, ''), randomblob(8));
    INSERT OR REPLACE INTO anchor_pending VALUES (coalesce(NEW.subject_hash, ''), randomblob(8));
END;
INSERT INTO anchor_pending SELECT '', randomblob(8) WHERE EXISTS (SELECT 1 FROM peers);
"""),
    (5, MIGRATION_5),
    (6, MIGRATION_6),
    (7, MIGRATION_7),
    (8, MIGRATION_DEVICES),
    (9, MIGRATION_9),
    (10, MIGRATION_ADDRESS_BOOK),
)
# Steps whose data needs Python (parsing certificates), run right after their SQL.
_FILLS: dict[int, Callable[[sqlite3.Connection], None]] = {7: fill_identity_keys}


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the file to SCHEMA_VERSION in one transaction (every step or none), with
    the version read again under the write lock, so racing processes migrate once.

    Statement by statement: ``executescript`` would commit first, and a crash between
    a step's ``ALTER TABLE`` and the version would leave a store no open could migrate.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for step, script in _STEPS:
            if version < step:
                for statement in _statements(script):
                    db.execute(statement)
        # The fills after every step's SQL: they write through today's code (an audit
        # row has the columns of the latest step, e.g. events.traffic).
        for step, fill in _FILLS.items():
            if version < step:
                fill(db)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (a full disk) has rolled back already: only roll back
        # what is open, so the first error is the one reported.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a script into statements (a trigger ends at its ``END;``)."""
    out, current = [], ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current)
            current = ""
    return out


# Beside the identity: written once a store exists here, so that a store that is later
# missing or truncated to 0 bytes is reported, never silently replaced by an empty one.
STORE_MARKER = ".trust-store-exists"


def _check_before_writing(home: Path, path: Path) -> None:
    """Refuse a store that vanished or was truncated (the marker says one existed).

    Raises:
        StoreUnusable: as said.
    """
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        if (home / STORE_MARKER).exists():
            state = "is empty (0 bytes)" if path.exists() else "is missing"
            raise StoreUnusable(
                f"the trust store {path} {state}, but a store existed here: every pairing "
                "would be lost. Restore it from a backup, or to start again with no paired "
                f"devices remove {home / STORE_MARKER}")
        return
    # Nothing else here opens the file: closing any descriptor of it would drop this
    # process's SQLite locks on it. SQLite itself says "not a database" below.


def _refuse_unless_ours(db: sqlite3.Connection, path: Path) -> None:
    """Reads only: refuse a newer or foreign store before anything is written to it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version > SCHEMA_VERSION:
        raise StoreUnusable(f"the trust store {path} is from a newer certpair (schema "
                            f"{version}; this one knows {SCHEMA_VERSION}); left untouched")
    # certpair sets the version in the transaction that creates its tables: tables
    # without a version, or a version without the peers table, are someone else's.
    if (version == 0 and tables) or (version > 0 and "peers" not in tables):
        raise StoreUnusable(f"{path} is not a certpair trust store (it holds other tables); "
                            "left untouched")


def _mark_store(home: Path) -> None:
    marker = home / STORE_MARKER
    if not marker.exists():
        # A read-only home: nothing can be lost there either.
        with contextlib.suppress(OSError):
            marker.touch(mode=0o600)


def open_store(home: Path) -> TrustStore:
    """Open (creating if needed) the trust store ``home/trust.db``.

    Args:
        home: certpair's home directory; it must exist.

    Returns:
        The open store.

    Raises:
        StoreUnusable: the file cannot be opened, is not a certpair store, or is newer
            than this version understands.
        InsecurePath: the home or the store is writable by group or others, or
            belongs to another user (as ssh's StrictModes).
    """
    path = home / "trust.db"
    check_private(home, "the certpair home")  # as ssh's StrictModes (certpair.filemodes)
    check_private(path, "the trust store")
    _check_before_writing(home, path)
    with contextlib.suppress(OSError):  # exists already, or a read-only home: SQLite says
        # 0600 whatever the umask; SQLite gives its WAL and shared-memory files this mode.
        create_private(path)
    try:
        # The store serialises its own calls with a lock, so any thread may use it.
        db = sqlite3.connect(path, timeout=10.0, isolation_level="DEFERRED",
                             check_same_thread=False)
        try:
            _refuse_unless_ours(db, path)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: every commit is atomic and survives a process crash; only
            # a power loss may roll back the latest commits (never half of one).
            # Removals of trust run with FULL (see TrustStore.remove_peer), so they last.
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnusable(f"the trust store {path} is from a newer certpair")
            if version < SCHEMA_VERSION:
                _migrate(db)
            # Repair the anchor directory after any crash (cheap when nothing is pending).
            sync_anchors(db, home / ANCHORS_DIRECTORY)
            max_rows()  # a bad CERTPAIR_LOG_MAX_ROWS is said at once, not at a write
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise StoreUnusable(f"cannot open the trust store {path}: {describe(exc, home)}"
                            ) from exc
    except OSError as exc:
        why = DISK_FULL if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise StoreUnusable(
            f"cannot write the anchor directory {home / ANCHORS_DIRECTORY}: {why}") from exc
    _mark_store(home)
    return TrustStore(db, path)


def open_store_for_reading(home: Path) -> TrustStore:
    """Open the store for a command that only reads it: as :func:`open_store` does,
    and on a full disk too.

    With no room left, SQLite cannot make the shared-memory index that a WAL store
    needs while no other process has it open, and every open fails. Then the store is
    opened with that index in this process's memory (SQLite's exclusive locking mode:
    another process waits, up to its busy timeout, while this one reads) and
    ``query_only``: nothing is written, not even by a migration.

    Raises:
        StoreUnusable: as :func:`open_store`, and a store that needs a migration on a
            full disk.
    """
    path = home / "trust.db"
    try:
        return open_store(home)
    except StoreUnusable:
        # Only a store that exists, whole (an empty one is said as such), on a full disk.
        if not (path.is_file() and path.stat().st_size > 0 and disk_full(home)):
            raise
    try:
        db = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA query_only=1")
            _refuse_unless_ours(db, path)
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                raise StoreUnusable(f"cannot open the trust store {path}: it needs an "
                                    f"upgrade, and {DISK_FULL}")
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise StoreUnusable(f"cannot open the trust store {path}: {describe(exc, home)}"
                            ) from exc
    return TrustStore(db, path)
