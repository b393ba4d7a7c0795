"""Rotation state on disk: successors in the store, the pending key, an interrupted finish."""

from __future__ import annotations

import os
import sqlite3
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.identity import create_identity, fingerprint, load_identity
from certpair.rotation.pending import finish_rotation, load_pending, start_rotation
from certpair.store import SuccessorVerdict, TrustStore, open_store
from certpair.store.schema import _SCHEMA, SCHEMA_VERSION
from tests.helpers import make_self_signed_cert

OLD, NEW, OTHER, NEWER = (make_self_signed_cert(n, s)
                          for n, s in (("a", 1), ("a2", 2), ("c", 3), ("a3", 4)))


def anchor_files(store: TrustStore) -> set[bytes]:
    return {ssl.PEM_cert_to_DER_cert(path.read_text()) for path in store.anchors.glob("*.[0-9]")}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TrustStore]:
    with open_store(tmp_path) as opened:
        for name, der in (("a", OLD), ("c", OTHER)):
            opened.commit_pairing(name=name, cert_der=der, mode="cpace", role="offerer",
                                  remote="t")
        yield opened


def test_pending_successor_is_an_anchor_and_unpair_drops_it(store: TrustStore) -> None:
    version = store.peers_version()
    assert store.learn_successor(fingerprint(OLD), NEW, remote="t") is True
    assert store.peers_version() > version  # trusted contexts reload
    assert set(store.acceptable_certificates()) == {fingerprint(d) for d in (OLD, NEW, OTHER)}
    assert set(store.acceptable_certificates(fingerprint(OLD))) == {fingerprint(OLD),
                                                                    fingerprint(NEW)}
    assert anchor_files(store) == {OLD, NEW, OTHER}  # what OpenSSL looks anchors up in
    store.remove_peer(fingerprint(OLD))
    assert anchor_files(store) == {OTHER}
    assert set(store.acceptable_certificates()) == {fingerprint(OTHER)}
    assert store.successors() == []
    assert store.admit(fingerprint(NEW)) is None


def test_successor_rules_first_wins_idempotent_not_a_peer_and_collisions(
        store: TrustStore) -> None:
    old = fingerprint(OLD)
    with pytest.raises(SuccessorVerdict, match="NOT_A_PEER"):
        store.learn_successor(fingerprint(NEWER), NEW, remote="t")
    with pytest.raises(SuccessorVerdict, match="CONFLICT"):
        store.learn_successor(old, OTHER, remote="t")  # another peer's certificate
    with pytest.raises(SuccessorVerdict, match="CONFLICT"):
        store.learn_successor(old, OLD, remote="t")
    assert store.learn_successor(old, NEW, remote="t") is True
    assert store.learn_successor(old, NEW, remote="t") is False  # the same one again
    with pytest.raises(SuccessorVerdict, match="CONFLICT"):
        store.learn_successor(old, NEWER, remote="t")  # a second rotation: first wins
    with pytest.raises(SuccessorVerdict, match="CONFLICT"):
        store.learn_successor(fingerprint(OTHER), NEW, remote="t")  # someone's successor
    assert [s.fingerprint for s in store.successors()] == [fingerprint(NEW)]


def test_first_connection_under_the_successor_completes_the_rotation(
        store: TrustStore) -> None:
    old = fingerprint(OLD)
    store.learn_successor(old, NEW, remote="t")
    store.remember_address(old, "127.0.0.1:1")
    assert store.admit(old) is not None  # the old key still works while pending
    peer = store.admit(fingerprint(NEW))
    assert peer is not None and peer.name == "a" and peer.cert_der == NEW
    assert store.admit(old) is None
    assert fingerprint(OLD) not in store.acceptable_certificates()
    assert anchor_files(store) == {NEW, OTHER}
    [done] = store.successors()
    assert (done.state, done.peer_fingerprint) == ("completed", old)
    assert store.addresses() == {fingerprint(NEW): "127.0.0.1:1"}
    assert [(e.kind, e.outcome) for e in store.events(limit=2)] == [
        ("rotation", "completed"), ("rotation", "learned")]


def test_an_older_store_migrates_to_the_rotation_tables(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.executescript(_SCHEMA)
        db.execute("PRAGMA user_version = 2")  # before steps 3, 4 and 5
    with open_store(tmp_path) as migrated:
        assert migrated.acceptable_certificates() == {}
    with sqlite3.connect(tmp_path / "trust.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10


def test_pending_key_is_0600_and_a_start_cut_short_leaves_no_rotation(tmp_path: Path) -> None:
    create_identity(tmp_path, "alpha")
    _, pending = start_rotation(tmp_path)
    assert stat.S_IMODE(pending.key_path.stat().st_mode) == 0o600
    pending.cert_path.unlink()  # as if killed between writing the key and the cert
    assert load_pending(tmp_path) is None
    _, again = start_rotation(tmp_path)
    assert again.fingerprint != pending.fingerprint


def test_a_finish_cut_short_between_its_two_renames_is_completed_on_load(
        tmp_path: Path) -> None:
    create_identity(tmp_path, "alpha")
    _, pending = start_rotation(tmp_path)
    identity_dir = tmp_path / "identity"
    os.replace(pending.cert_path, identity_dir / "cert.pem")  # the first rename only
    healed = load_identity(tmp_path)
    assert healed.fingerprint == pending.fingerprint
    assert not pending.key_path.exists()
    assert load_identity(tmp_path).fingerprint == pending.fingerprint


def test_finish_switches_the_identity(tmp_path: Path) -> None:
    old = create_identity(tmp_path, "alpha")
    _, pending = start_rotation(tmp_path)
    finish_rotation(tmp_path)
    new = load_identity(tmp_path)
    assert (new.fingerprint, new.name) == (pending.fingerprint, old.name)
    assert load_pending(tmp_path) is None
