"""The anchor directory: derived from the store, named as OpenSSL names it, collisions
numbered, repaired after a crash at any point, and never trusted on its own."""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from certpair.identity import create_identity, fingerprint
from certpair.store import TrustStore, open_store
from certpair.store.anchors import anchor_problem, subject_hash
from certpair.trusted import client_context, server_context
from tests.attacks.forged_certs import forge_cert, key_usage, p256, write_identity
from tests.test_store import V4_UNDONE, self_signed_certs
from tests.trustedutil import asyncio_handshake, handshake

OPENSSL = shutil.which("openssl")
_FILE = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def add(store: TrustStore, name: str, der: bytes) -> None:
    store.commit_pairing(name=name, cert_der=der, mode="cpace", role="offerer", remote="t")


def add_twin(store: TrustStore, name: str, der: bytes) -> None:
    """Store a peer whose subject another stored peer has, as a store from before the
    identity index (schema step 7) may hold (a pairing refuses it now; subjects that
    differ may still hash alike), then let the directory follow."""
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at,"
                   " subject_hash) VALUES (?, ?, ?, 'cpace', 'then', ?)",
                   (fingerprint(der), name, der, subject_hash(der)))
    store.sync_anchors()


def expected_directory(home: Path) -> dict[str, str]:
    """What the directory must hold, computed from the store's rows alone."""
    with sqlite3.connect(home / "trust.db") as db:
        rows = db.execute("SELECT fingerprint, cert_der FROM peers").fetchall()
    buckets: dict[str, list[tuple[str, bytes]]] = {}
    for fp, der in rows:
        if anchor_problem(der) is None:
            buckets.setdefault(subject_hash(der), []).append((fp, der))
    return {f"{h}.{n}": ssl.DER_cert_to_PEM_cert(der)
            for h, members in buckets.items()
            for n, (_, der) in enumerate(sorted(members))}


def actual_directory(home: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (home / "anchors").iterdir()
            if _FILE.fullmatch(p.name)}


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl binary")
def test_file_names_are_the_hash_openssl_x509_prints(tmp_path: Path) -> None:
    assert OPENSSL is not None
    peer = create_identity(tmp_path / "beta", "beta")
    with open_store(tmp_path) as store:
        add(store, "beta", peer.cert_der)
    printed = subprocess.run([OPENSSL, "x509", "-hash", "-noout", "-in",
                              str(peer.cert_path)], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert list(actual_directory(tmp_path)) == [f"{printed}.0"]
    assert subject_hash(peer.cert_der) == printed


def test_subjects_that_hash_alike_are_numbered_and_renumbered_on_removal(
    tmp_path: Path,
) -> None:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "same")])
    ders = [forge_cert(p256(), subject=subject) for _ in range(3)]
    with open_store(tmp_path) as store:
        for i, der in enumerate(ders):
            add_twin(store, f"twin{i}", der)
        bucket = subject_hash(ders[0])
        assert sorted(actual_directory(tmp_path)) == [f"{bucket}.{n}" for n in range(3)]
        assert actual_directory(tmp_path) == expected_directory(tmp_path)
        store.remove_peer(fingerprint(min(ders, key=fingerprint)))
        assert sorted(actual_directory(tmp_path)) == [f"{bucket}.0", f"{bucket}.1"]
        assert actual_directory(tmp_path) == expected_directory(tmp_path)


def test_every_twin_with_a_colliding_subject_is_accepted_by_a_context(tmp_path: Path) -> None:
    alpha = create_identity(tmp_path / "alpha", "alpha")
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "twin")])
    for i in range(3):
        home = tmp_path / f"twin{i}"
        create_identity(home, "twin")
        key = p256()
        der = forge_cert(key, subject=subject)
        write_identity(home, der, key)
        with open_store(home) as store:
            add(store, "alpha", alpha.cert_der)
        with open_store(tmp_path / "alpha") as store:
            add_twin(store, f"twin{i}", der)
    server = server_context(tmp_path / "alpha")
    for i in range(3):
        outcome = handshake(server, client_context(tmp_path / f"twin{i}"))
        assert outcome.ok, outcome


def test_a_stored_certificate_that_could_sign_gets_no_file(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        add(store, "ca", forge_cert(p256(), ca=True, usage=key_usage(cert_sign=True)))
        add(store, "leaf", forge_cert(p256()))
        assert len(store.peers()) == 2
    assert len(actual_directory(tmp_path)) == 1 == len(expected_directory(tmp_path))


def test_a_deleted_or_damaged_directory_is_rebuilt_from_the_store_on_open(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path) as store:
        for i, der in enumerate(self_signed_certs(5)):
            add(store, f"p{i}", der)
    want = expected_directory(tmp_path)
    shutil.rmtree(tmp_path / "anchors")
    open_store(tmp_path).close()
    assert actual_directory(tmp_path) == want


@pytest.mark.parametrize("version_3", [False, True])
def test_rows_written_by_plain_sql_or_by_a_version_3_store_are_filed_on_open(
    tmp_path: Path, version_3: bool
) -> None:
    open_store(tmp_path).close()
    ders = self_signed_certs(3)
    with sqlite3.connect(tmp_path / "trust.db") as db:
        if version_3:  # a store from before the anchor directory
            db.executescript(V4_UNDONE + "PRAGMA user_version = 3;")
            shutil.rmtree(tmp_path / "anchors")
        db.executemany("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                       " VALUES (?, ?, ?, 'cpace', 'now')",
                       [(fingerprint(d), f"p{i}", d) for i, d in enumerate(ders)])
    open_store(tmp_path).close()
    assert actual_directory(tmp_path) == expected_directory(tmp_path)
    assert len(actual_directory(tmp_path)) == 3


def test_a_certificate_put_in_the_directory_but_not_in_the_store_is_refused(
    tmp_path: Path,
) -> None:
    # Nothing in the directory is trusted on its own: after the handshake the leaf
    # must be a stored peer.
    alpha = create_identity(tmp_path / "alpha", "alpha")
    mallory = create_identity(tmp_path / "mallory", "mallory")
    with open_store(tmp_path / "mallory") as store:
        add(store, "alpha", alpha.cert_der)
    server = server_context(tmp_path / "alpha")
    planted = tmp_path / "alpha" / "anchors" / f"{subject_hash(mallory.cert_der)}.0"
    planted.write_text(ssl.DER_cert_to_PEM_cert(mallory.cert_der))
    outcome = handshake(server, client_context(tmp_path / "mallory"))
    assert isinstance(outcome.server, ssl.SSLCertVerificationError), outcome
    assert "not a paired device" in str(outcome.server)


def test_asyncio_servers_refuse_a_planted_certificate_too(tmp_path: Path) -> None:
    # OpenSSL accepts the planted file; only the check after the handshake, in the
    # SSLObject that asyncio drives, stands between it and the handler.
    alpha = create_identity(tmp_path / "alpha", "alpha")
    mallory = create_identity(tmp_path / "mallory", "mallory")
    with open_store(tmp_path / "mallory") as store:
        add(store, "alpha", alpha.cert_der)
    planted = tmp_path / "alpha" / "anchors" / f"{subject_hash(mallory.cert_der)}.0"
    server_ctx = server_context(tmp_path / "alpha")
    planted.write_text(ssl.DER_cert_to_PEM_cert(mallory.cert_der))
    assert asyncio_handshake(server_ctx, client_context(tmp_path / "mallory")) == (b"", False)


# -- crash safety: a writer killed at a random point ----------------------------------------

_CHILD = r"""
import os, random, signal, sys
from pathlib import Path
home, seed, kill_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
from certpair.store import open_store
from certpair.identity import fingerprint
from certpair.profile import CertificateRefused
ders = [bytes.fromhex(line) for line in (home / "pool.hex").read_text().split()]
store = open_store(home)
rng = random.Random(seed)
count = 0
def tracer(frame, event, arg):
    # Count executed lines in the store package and die on the chosen one.
    global count
    if "certpair/store" in frame.f_code.co_filename:
        if event == "line":
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return tracer
    return None
sys.settrace(tracer)
for step in range(12):
    stored = {p.fingerprint for p in store.peers()}
    der = rng.choice(ders)
    if fingerprint(der) in stored:
        store.remove_peer(fingerprint(der))
    else:
        try:
            store.commit_pairing(name=f"p{step}", cert_der=der, mode="cpace",
                                 role="offerer", remote="crash")
        except CertificateRefused:
            pass  # a twin of a stored subject: refused, nothing written
sys.settrace(None)
print(count)
"""


def test_a_writer_killed_at_random_points_leaves_a_directory_the_next_open_repairs(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261130)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "shared")])
    # Distinct subjects and a few that collide, so buckets get renumbered too.
    pool = self_signed_certs(4) + [forge_cert(p256(), subject=subject) for _ in range(3)]
    killed = finished = 0
    for run in range(24):
        home = tmp_path / f"run{run}"
        home.mkdir()
        (home / "pool.hex").write_text("\n".join(d.hex() for d in pool))
        with open_store(home) as store:  # start from a few peers already stored
            for der in rng.sample(pool, 3):
                add_twin(store, "seed", der)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(home), str(run), str(rng.randrange(1, 1500))],
            capture_output=True, text=True, timeout=120, check=False)
        if child.returncode == -9:
            killed += 1
        else:
            assert child.returncode == 0, child.stderr
            finished += 1
        open_store(home).close()  # the repair
        assert actual_directory(home) == expected_directory(home), f"run {run}"
        assert not [p for p in (home / "anchors").iterdir() if p.name.endswith(".tmp")]
        with sqlite3.connect(home / "trust.db") as db:
            assert db.execute("SELECT count(*) FROM anchor_pending").fetchone() == (0,)
    assert killed >= 16, (killed, finished)
