"""The trust store's peer management: remove, rename, find, and the change counter."""

from __future__ import annotations

import datetime
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certpair.errors import BadInput
from certpair.identity import Identity, fingerprint
from certpair.store import (
    MIN_PREFIX_DIGITS,
    AmbiguousPeer,
    PeerNotFound,
    TrustStore,
    open_store,
)

MakeDevice = Callable[[str], tuple[Identity, TrustStore]]
_START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def self_signed_certs(count: int, prefix: str = "filler") -> list[bytes]:
    """Distinct, valid self-signed Ed25519 certificates (fast to make: ~0.15 ms each)."""
    out = []
    for i in range(count):
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}-{i}")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(i + 1)
                .not_valid_before(_START).not_valid_after(_START + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(key, None))
        out.append(cert.public_bytes(Encoding.DER))
    return out


def certs_sharing_a_prefix(digits: int) -> tuple[bytes, bytes]:
    """Two certificates whose fingerprints share their first ``digits`` hex digits."""
    seen: dict[str, bytes] = {}
    while True:
        (der,) = self_signed_certs(1, prefix=f"c{len(seen)}")
        head = fingerprint(der)[7 : 7 + digits]
        if head in seen:
            return seen[head], der
        seen[head] = der


def add(store: TrustStore, name: str, der: bytes) -> str:
    return store.commit_pairing(name=name, cert_der=der, mode="cpace", role="offerer",
                                remote="test").fingerprint


@pytest.fixture
def store(make_device: MakeDevice) -> TrustStore:
    return make_device("alpha")[1]


def test_remove_peer_deletes_it_and_logs_the_unpairing_in_the_same_store(
    store: TrustStore,
) -> None:
    beta, gamma = self_signed_certs(2)
    fp_beta, fp_gamma = add(store, "beta", beta), add(store, "gamma", gamma)
    removed = store.remove_peer(fp_beta)
    assert (removed.name, removed.fingerprint, removed.cert_der) == ("beta", fp_beta, beta)
    assert [p.fingerprint for p in store.peers()] == [fp_gamma]
    assert store.peer(fp_beta) is None
    latest = store.events(limit=1)[0]
    assert (latest.kind, latest.outcome, latest.peer_name, latest.peer_fingerprint) == (
        "unpairing", "removed", "beta", fp_beta)


def test_removing_an_unknown_peer_raises_peer_not_found_and_logs_nothing(
    store: TrustStore,
) -> None:
    add(store, "beta", self_signed_certs(1)[0])
    before = store.events()
    with pytest.raises(PeerNotFound):
        store.remove_peer("sha256:" + "0" * 64)
    assert store.events() == before and len(store.peers()) == 1


def test_rename_peer_changes_only_the_name_and_logs_the_old_one(store: TrustStore) -> None:
    der = self_signed_certs(1)[0]
    fp = add(store, "beta", der)
    paired_at = store.peers()[0].paired_at
    renamed = store.rename_peer(fp, "kitchen tablet")
    assert store.peers() == [renamed]
    assert (renamed.name, renamed.cert_der, renamed.paired_at) == ("kitchen tablet", der, paired_at)
    latest = store.events(limit=1)[0]
    assert (latest.kind, latest.reason, latest.peer_name) == ("rename", "was beta",
                                                              "kitchen tablet")


@pytest.mark.parametrize("bad", ["", "x" * 65, "tab\there", "bell\x07"])
def test_rename_refuses_an_unacceptable_name_and_keeps_the_old_one(
    store: TrustStore, bad: str
) -> None:
    fp = add(store, "beta", self_signed_certs(1)[0])
    with pytest.raises(BadInput):
        store.rename_peer(fp, bad)
    assert store.peers()[0].name == "beta"


@pytest.mark.parametrize("how", ["name", "full", "full-without-tag", "prefix", "tagged-prefix",
                                 "openssl-style"])
def test_find_peer_accepts_a_name_a_fingerprint_or_a_prefix(store: TrustStore, how: str) -> None:
    beta, gamma = self_signed_certs(2)
    while fingerprint(gamma)[:11] == fingerprint(beta)[:11]:  # 1 in 65,536: draw again
        gamma = self_signed_certs(1)[0]
    fp = add(store, "beta", beta)
    add(store, "gamma", gamma)
    query = {"name": "beta", "full": fp, "full-without-tag": fp[7:],
             "prefix": fp[7 : 7 + MIN_PREFIX_DIGITS + 4],
             "tagged-prefix": fp[: 7 + MIN_PREFIX_DIGITS],
             "openssl-style": ":".join(fp[i : i + 2] for i in range(7, 71, 2)).upper()}[how]
    assert store.find_peer(query).fingerprint == fp


def test_a_prefix_shared_by_two_peers_is_ambiguous_and_a_longer_one_is_not(
    store: TrustStore,
) -> None:
    first, second = certs_sharing_a_prefix(MIN_PREFIX_DIGITS)
    fp1, fp2 = add(store, "one", first), add(store, "two", second)
    with pytest.raises(AmbiguousPeer, match="matches 2 paired devices"):
        store.find_peer(fp1[7 : 7 + MIN_PREFIX_DIGITS])
    common = next(i for i, (a, b) in enumerate(zip(fp1, fp2, strict=True)) if a != b)
    assert store.find_peer(fp2[: common + 1]).fingerprint == fp2


def test_two_peers_with_the_same_name_are_ambiguous_by_name(store: TrustStore) -> None:
    first, second = self_signed_certs(2)
    add(store, "phone", first)
    add(store, "phone", second)  # stored as "phone (2)" (tests/attacks/test_peer_names.py)
    store.rename_peer(fingerprint(second), "phone")  # a user may still choose it
    with pytest.raises(AmbiguousPeer):
        store.find_peer("phone")
    assert store.find_peer(fingerprint(second)).cert_der == second


@pytest.mark.parametrize("query", ["nobody", "sha256:", "abc", "sha256:abc", "AB:C", "%", "_"])
def test_unknown_names_and_too_short_prefixes_match_nothing(
    store: TrustStore, query: str
) -> None:
    for der in self_signed_certs(20):
        add(store, "device", der)
    assert store.find_peers(query) == []
    with pytest.raises(PeerNotFound):
        store.find_peer(query)


def test_peers_version_grows_with_changes_from_another_connection_but_not_with_events(
    tmp_path: Path,
) -> None:
    tmp_path.mkdir(exist_ok=True)
    with open_store(tmp_path) as reader, open_store(tmp_path) as writer:
        start = reader.peers_version()
        fp = add(writer, "beta", self_signed_certs(1)[0])
        after_add = reader.peers_version()
        writer.record_event(kind="connection", role="server", remote="x", mode="mtls",
                            outcome="accepted", reason="")
        assert reader.peers_version() == after_add > start
        writer.rename_peer(fp, "b")
        after_rename = reader.peers_version()
        writer.remove_peer(fp)
        assert start < after_add < after_rename < reader.peers_version()


def test_direct_inserts_also_bump_the_version(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        start = store.peers_version()
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                   " VALUES ('sha256:00', 'x', x'00', 'cpace', 'now')")
    with open_store(tmp_path) as store:
        assert store.peers_version() > start


def test_a_store_made_before_the_counter_existed_gains_it_on_open(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.executescript(
            "CREATE TABLE peers (fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL,"
            " cert_der BLOB NOT NULL, mode TEXT NOT NULL, paired_at TEXT NOT NULL);"
            "PRAGMA user_version = 1;")
    with open_store(tmp_path) as store:
        start = store.peers_version()
        add(store, "beta", self_signed_certs(1)[0])
        assert store.peers_version() == start + 1


def test_one_store_can_be_used_from_several_threads(store: TrustStore) -> None:
    certs = self_signed_certs(40)
    errors: list[BaseException] = []

    def work(part: list[bytes]) -> None:
        try:
            for der in part:
                add(store, "t", der)
                store.peers_version()
                store.peer(fingerprint(der))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(certs[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.peers()) == 40


# What schema step 10 (the address book) did, undone: step 5's peer_addresses is back.
V10_UNDONE = """
DROP TRIGGER peers_deleted_successors; DROP TABLE address_book;
CREATE TABLE peer_addresses (
    peer_fingerprint TEXT PRIMARY KEY, address TEXT NOT NULL, seen_at TEXT NOT NULL);
CREATE TRIGGER peers_deleted_successors AFTER DELETE ON peers BEGIN
    DELETE FROM successors WHERE peer_fingerprint = old.fingerprint AND state = 'pending';
    DELETE FROM peer_addresses WHERE peer_fingerprint = old.fingerprint;
END;
"""
# What schema step 9 (the log's two budgets) added, taken away again (after step 10's).
V9_UNDONE = V10_UNDONE + """
DROP INDEX events_by_budget; ALTER TABLE events DROP COLUMN traffic;
"""
# What schema step 8 (device ids) added, taken away again (after step 9's).
V8_UNDONE = V9_UNDONE + """
DROP TRIGGER peers_device_id; DROP INDEX peers_by_device; DROP INDEX successors_by_device;
ALTER TABLE peers DROP COLUMN device_id; ALTER TABLE successors DROP COLUMN device_id;
"""
# What schema step 7 (the identity index) added, taken away again (after step 8's).
V7_UNDONE = V8_UNDONE + """
DROP TRIGGER identity_keys_peer_deleted; DROP TABLE identity_keys; DROP TABLE peer_names;
DROP TABLE key_alarms;
"""
# What schema step 6 (counted refusals) added, taken away again (after step 7's).
V6_UNDONE = V7_UNDONE + """
DROP INDEX events_by_source; ALTER TABLE events DROP COLUMN count;
"""
# What schema step 5 (key rotation) added, taken away again (after step 6's).
V5_UNDONE = V6_UNDONE + """
DROP TRIGGER successors_inserted; DROP TRIGGER successors_updated;
DROP TRIGGER successors_deleted; DROP TRIGGER peers_deleted_successors;
DROP VIEW trusted_certs; DROP TABLE successors; DROP TABLE rotation_told;
DROP TABLE peer_addresses;
"""
# What schema step 4 (the anchor directory) added, taken away again (after step 5's).
V4_UNDONE = V5_UNDONE + """
DROP TRIGGER anchors_inserted; DROP TRIGGER anchors_deleted; DROP TRIGGER anchors_updated;
DROP TABLE anchor_pending; DROP INDEX peers_by_subject_hash; DROP INDEX peers_by_pairing;
ALTER TABLE peers DROP COLUMN subject_hash;
"""


def test_a_version_2_store_gains_the_confirmed_column_with_its_peers_confirmed(
    tmp_path: Path,
) -> None:
    der = self_signed_certs(1)[0]
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "trust.db") as db:  # back to what version 2 wrote
        db.executescript(V4_UNDONE + "ALTER TABLE peers DROP COLUMN confirmed;"
                         " PRAGMA user_version = 2;")
        db.execute("INSERT INTO peers VALUES (?, 'beta', ?, 'cpace', 'then')",
                   (fingerprint(der), der))
    with open_store(tmp_path) as store:
        (peer,) = store.peers()
        assert peer.confirmed is True
        assert store.commit_pairing(name="gamma", cert_der=self_signed_certs(2)[1],
                                    mode="cpace", role="joiner", remote="x",
                                    confirmed=False).confirmed is False
        unconfirmed = [p for p in store.peers() if not p.confirmed]
        assert [p.name for p in unconfirmed] == ["gamma"]
        assert store.confirm_peer(unconfirmed[0].fingerprint, remote="x", reason="test")
        assert not store.confirm_peer(unconfirmed[0].fingerprint, remote="x", reason="test")
        assert all(p.confirmed for p in store.peers())


def test_a_version_5_store_gains_counted_refusals_with_its_rows_counted_once(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path) as store:
        store.record_event(kind="connection", role="server", remote="10.0.0.9:5", mode="mtls",
                           outcome="refused", reason="old")
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.executescript(V6_UNDONE + "PRAGMA user_version = 5;")
    with open_store(tmp_path) as store:
        assert [e.count for e in store.events()] == [1]
        for port in (1, 2, 3):
            store.record_refusal(kind="connection", role="server", remote=f"[::1]:{port}",
                                 mode="mtls", reason="new", at=1_000_000_000 + port)
        newest = store.events()[0]
        assert (newest.remote, newest.count, newest.at) == ("::1", 3, "2001-09-09T01:46:41Z")


def test_a_version_6_store_gains_the_identity_index_and_logs_the_collisions_it_held(
    tmp_path: Path,
) -> None:
    from tests.attacks.forged_certs import copy_names

    first, second, third = self_signed_certs(3)
    _, twin = copy_names(first)  # a squat a store from before step 7 could hold
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "trust.db") as db:  # back to what version 6 wrote
        db.executescript(V7_UNDONE + "PRAGMA user_version = 6;")
        for at, (name, der) in enumerate((("one", first), ("two", second), ("twin", twin))):
            db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                       " VALUES (?, ?, ?, 'cpace', ?)", (fingerprint(der), name, der, str(at)))
    with open_store(tmp_path) as store:
        (logged,) = [e for e in store.events() if e.outcome == "collision"]
        assert logged.peer_fingerprint == fingerprint(twin)
        assert fingerprint(first) in logged.reason
        # The index holds what was stored: names and certificates are taken.
        assert store.commit_pairing(name="TWO", cert_der=third, mode="cpace", role="joiner",
                                    remote="x").name == "TWO (2)"
        assert store.colliding_peer(copy_names(second)[1]) == fingerprint(second)
