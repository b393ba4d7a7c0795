"""One device, one identity: the index that keeps two devices from sharing a name.

Every certificate this store trusts (each peer's, and each peer's pending successor)
has *identity keys*: its subject and each DNS/IP/URI/e-mail name a TLS client may match
it by (:func:`certpair.profile.certificate_keys`). The table ``identity_keys`` holds each
key once, with its
*owner*: the fingerprint of the paired peer whose certificate (or successor, or name)
carries it. ``key`` is the primary key, so two devices can never hold one key: the rule
is enforced by SQLite where the rows are written, in the same transaction as the peer or
successor row, whichever process writes (racing pairings included). A device's own
successor carries its predecessor's names; both belong to one owner, so that is no
collision. When a rotation completes the owner is re-pointed to the new fingerprint.

Each peer's local name is indexed too (``peer_names``), as a person reads it
(:func:`certpair.names.name_key`: NFKC, case folded, confusable skeleton), so that a
pairing finds in one seek whether the name it was given is another device's (it is then
stored as ``name (2)``). That index is not unique: the user may rename a device to any
name, even one another device has.

Every per-pairing check is a lookup of a handful of keys in this index: no read grows
with the number of peers.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterable

from certpair.names import name_key
from certpair.profile import CertificateRefused, ProfileRule, certificate_keys
from certpair.store.events import insert_event
from certpair.store.records import Event

__all__ = [
    "MIGRATION_7",
    "NAME_PREFIX",
    "collision",
    "fill_identity_keys",
    "key_of_name",
    "owner_of",
    "peer_keys",
    "rekey",
    "set_name",
    "taken_name",
]

NAME_PREFIX = "name:"

# Schema step 7 (see store.schema): the identity keys, and the warnings of a peer's key
# that signed two different rotations (key_alarms; store/successors.py).
MIGRATION_7 = """
CREATE TABLE identity_keys (
    key   TEXT PRIMARY KEY,
    owner TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX identity_keys_by_owner ON identity_keys (owner);
CREATE TABLE peer_names (
    key   TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (key, owner)
) WITHOUT ROWID;
CREATE INDEX peer_names_by_owner ON peer_names (owner);
CREATE TABLE key_alarms (
    peer_fingerprint TEXT PRIMARY KEY,
    kept_successor   TEXT NOT NULL,
    other_successor  TEXT NOT NULL,
    seen_at          TEXT NOT NULL
);
CREATE TRIGGER identity_keys_peer_deleted AFTER DELETE ON peers BEGIN
    DELETE FROM identity_keys WHERE owner = OLD.fingerprint;
    DELETE FROM peer_names WHERE owner = OLD.fingerprint;
    DELETE FROM key_alarms WHERE peer_fingerprint = OLD.fingerprint;
END;
"""


def key_of_name(name: str) -> str:
    """The index key of a device name (equal for names a person cannot tell apart)."""
    return NAME_PREFIX + name_key(name)


def peer_keys(cert_der: bytes) -> set[str]:
    """The identity keys of one certificate (none if it cannot be parsed: it has no
    names a TLS client could match it by)."""
    try:
        return set(certificate_keys(cert_der))
    except CertificateRefused:
        return set()


def owner_of(db: sqlite3.Connection, key: str) -> str | None:
    """The fingerprint of the peer holding ``key``, or None (one index seek)."""
    row = db.execute("SELECT owner FROM identity_keys WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def collision(db: sqlite3.Connection, keys: Iterable[str], owner: str) -> str | None:
    """The fingerprint of another peer holding one of ``keys``, or None (one seek each)."""
    for key in sorted(keys):
        holder = owner_of(db, key)
        if holder is not None and holder != owner:
            return holder
    return None


def taken_name(db: sqlite3.Connection, name: str, owner: str) -> bool:
    """Whether another peer is stored under a name that reads as ``name`` (one seek)."""
    row = db.execute("SELECT 1 FROM peer_names WHERE key = ? AND owner != ? LIMIT 1",
                     (key_of_name(name), owner)).fetchone()
    return row is not None


def set_name(db: sqlite3.Connection, owner: str, name: str) -> None:
    """Index ``owner``'s local name (replacing the one indexed before)."""
    db.execute("DELETE FROM peer_names WHERE owner = ?", (owner,))
    db.execute("INSERT INTO peer_names (key, owner) VALUES (?, ?)", (key_of_name(name), owner))


def rekey(db: sqlite3.Connection, owner: str) -> None:
    """Make ``owner``'s keys those of its stored certificate and pending successor, and
    index its name.

    Raises:
        CertificateRefused: rule ``NAME_COLLISION``: another peer holds one of them
            (the caller's transaction must then be rolled back).
    """
    row = db.execute("SELECT cert_der, name FROM peers WHERE fingerprint = ?",
                     (owner,)).fetchone()
    if row is None:
        db.execute("DELETE FROM identity_keys WHERE owner = ?", (owner,))
        db.execute("DELETE FROM peer_names WHERE owner = ?", (owner,))
        return
    keys = _held_keys(db, owner, row[0])
    holder = collision(db, keys, owner)
    if holder is not None:
        raise CertificateRefused(ProfileRule.NAME_COLLISION, f"matches {holder[:23]}")
    db.execute("DELETE FROM identity_keys WHERE owner = ?", (owner,))
    db.executemany("INSERT INTO identity_keys (key, owner) VALUES (?, ?)",
                   [(key, owner) for key in sorted(keys)])
    set_name(db, owner, row[1])


def _held_keys(db: sqlite3.Connection, owner: str, cert_der: bytes) -> set[str]:
    keys = peer_keys(cert_der)
    for (successor,) in db.execute(
            "SELECT cert_der FROM successors WHERE peer_fingerprint = ?"
            " AND state = 'pending'", (owner,)):
        keys |= peer_keys(successor)
    return keys


def fill_identity_keys(db: sqlite3.Connection) -> None:
    """Schema step 7's data: the keys of every stored peer and pending successor.

    A store from before this step may already hold two devices sharing a key (the
    collisions this index now prevents): the peer paired first keeps the key, and each
    such pair is written to the audit log (``collision``, naming both) so the user can
    unpair the one that should not be there. Runs once, parsing every stored certificate.
    """
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = db.execute(
        "SELECT fingerprint, cert_der, name, mode FROM peers ORDER BY paired_at, fingerprint"
    ).fetchall()
    for owner, cert_der, name, mode in rows:
        keys = sorted(_held_keys(db, owner, cert_der))
        db.executemany("INSERT OR IGNORE INTO identity_keys (key, owner) VALUES (?, ?)",
                       [(key, owner) for key in keys])
        holder = collision(db, keys, owner)
        if holder is not None:
            insert_event(db, Event(
                at=when, kind="pairing", role="local", remote="", mode=mode,
                outcome="collision",
                reason=f"shares a subject or name with {holder}: unpair the one that "
                       "should not be trusted",
                peer_fingerprint=owner, peer_name=name))
        set_name(db, owner, name)
