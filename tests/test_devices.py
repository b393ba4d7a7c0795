"""A peer is not its fingerprint: the device id survives rotations, and certificates
hang off it (store/devices.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from certpair.identity import fingerprint
from certpair.ports import TUNNEL_PORT
from certpair.store import open_store
from certpair.tunnel import resolve_far_end
from tests.helpers import make_self_signed_cert
from tests.test_store import V7_UNDONE

OLD, NEW, NEWER, OTHER = (make_self_signed_cert(n, s)
                          for n, s in (("a", 11), ("a2", 12), ("a3", 13), ("c", 14)))


def _pair(home: Path, name: str, der: bytes) -> str:
    with open_store(home) as store:
        return store.commit_pairing(name=name, cert_der=der, mode="cpace", role="offerer",
                                    remote="t").device_id


def test_a_device_keeps_its_id_through_two_rotations_and_its_certificates_hang_off_it(
        tmp_path: Path) -> None:
    device = _pair(tmp_path, "a", OLD)
    other = _pair(tmp_path, "c", OTHER)
    assert len(device) == 32 and device != other
    with open_store(tmp_path) as store:
        first = store.peer_by_device(device)
        assert first is not None and first.fingerprint == fingerprint(OLD)
        store.learn_successor(fingerprint(OLD), NEW, remote="t")
        assert store.device_fingerprints(device) == {fingerprint(OLD): "current",
                                                     fingerprint(NEW): "pending"}
        assert store.device_of_fingerprint(fingerprint(NEW)) == device
        admitted = store.admit(fingerprint(NEW))
        assert admitted is not None and admitted.device_id == device
        store.learn_successor(fingerprint(NEW), NEWER, remote="t")
        store.admit(fingerprint(NEWER))
        peer = store.peer_by_device(device)
        assert peer is not None and peer.fingerprint == fingerprint(NEWER)
        assert store.device_fingerprints(device) == {
            fingerprint(NEWER): "current", fingerprint(NEW): "former",
            fingerprint(OLD): "former"}
        assert store.device_of_fingerprint(fingerprint(OLD)) == device
        assert store.find_peer("a").device_id == device
        assert store.rename_peer(peer.fingerprint, "z").device_id == device
        store.remove_peer(peer.fingerprint)
        assert store.peer_by_device(device) is None
    # Paired again: a new device, with a new id.
    assert _pair(tmp_path, "a", NEWER) not in (device, "")


def test_re_pairing_a_known_certificate_keeps_its_device_id(tmp_path: Path) -> None:
    device = _pair(tmp_path, "a", OLD)
    assert _pair(tmp_path, "a-again", OLD) == device


def test_a_version_6_store_gives_each_peer_an_id_and_each_successor_its_device(
        tmp_path: Path) -> None:
    _pair(tmp_path, "a", OLD)
    _pair(tmp_path, "c", OTHER)
    with open_store(tmp_path) as store:  # two rotations of a, one completed, one pending
        store.learn_successor(fingerprint(OLD), NEW, remote="t")
        store.admit(fingerprint(NEW))
        store.learn_successor(fingerprint(NEW), NEWER, remote="t")
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.executescript(V7_UNDONE + "PRAGMA user_version = 6;")
        db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                   " VALUES ('sha256:00', 'raw', x'00', 'cpace', 'now')")
    with open_store(tmp_path) as store:
        ids = {p.name: p.device_id for p in store.peers()}
        assert all(len(i) == 32 for i in ids.values()) and len(set(ids.values())) == 3
        assert store.device_fingerprints(ids["a"]) == {
            fingerprint(NEW): "current", fingerprint(NEWER): "pending",
            fingerprint(OLD): "former"}
        # A row inserted by plain SQL gets an id too.
        with sqlite3.connect(tmp_path / "trust.db") as db:
            db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                       " VALUES ('sha256:01', 'raw2', x'00', 'cpace', 'now')")
        assert len(store.find_peer("raw2").device_id) == 32


def test_tunnel_connect_finds_the_pairing_address_after_the_peer_rotated(
        tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.commit_pairing(name="a", cert_der=OLD, mode="cpace", role="joiner",
                             remote="192.0.2.7:4490")
        store.learn_successor(fingerprint(OLD), NEW, remote="t")
        peer = store.admit(fingerprint(NEW))  # the log's pairing row holds the old key
        assert peer is not None
        assert resolve_far_end(store, peer, None) == ("192.0.2.7", TUNNEL_PORT, "pairing")
