"""Local state (issue 11 section 4, issue 10 section 4): the key's mode, crashes during
``init``, stores refused without being touched, a truncated store, corrupt rows, and
``rename`` racing ``unpair``."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from certpair.errors import LocalStateError
from certpair.identity import (
    NotInitialised,
    PairedIdentity,
    create_identity,
    load_identity,
)
from certpair.store import StoreUnusable, open_store
from tests.cliutil import events, run

_FORK = multiprocessing.get_context("fork")


def _one_error_line(result: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# -- the key's mode ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_readable_by_group_or_others_is_refused_with_the_chmod_command(
    tmp_path: Path, mode: int
) -> None:
    identity = create_identity(tmp_path, "alpha")
    os.chmod(identity.key_path, mode)
    with pytest.raises(LocalStateError, match="chmod 600"):
        load_identity(tmp_path)
    _one_error_line(run(tmp_path, "show"), 5, f"chmod 600 {identity.key_path}")
    os.chmod(identity.key_path, 0o600)
    assert load_identity(tmp_path).fingerprint == identity.fingerprint


# -- init and init --force: old or new identity, never a mix ------------------------------


def _crash_at(step: int, home: Path, force: bool) -> None:
    """In a child: create an identity, dying like SIGKILL (no clean-up) at the
    ``step``-th rename or fsync."""
    calls = 0
    real_replace, real_fsync = os.replace, os.fsync

    def maybe_die() -> None:
        nonlocal calls
        calls += 1
        if calls > step:
            os._exit(137)

    def replace(src: object, dst: object) -> None:
        maybe_die()
        real_replace(src, dst)  # type: ignore[arg-type]  # paths, as the caller gives

    def fsync(fd: int) -> None:
        maybe_die()
        real_fsync(fd)

    os.replace, os.fsync = replace, fsync  # type: ignore[assignment]  # the child only
    create_identity(home, "new", force=force, unpair_all=True)
    os._exit(0)


@pytest.mark.parametrize("force", [True, False], ids=["init --force", "first init"])
def test_a_crash_at_any_step_of_init_leaves_the_old_identity_or_the_new_one(
    tmp_path: Path, force: bool
) -> None:
    finished = False
    step = 0
    while not finished:
        home = tmp_path / f"step{step}"
        old = create_identity(home, "old").fingerprint if force else None
        child = _FORK.Process(target=_crash_at, args=(step, home, force))
        child.start()
        child.join(60)
        finished = child.exitcode == 0
        if force or finished:
            # Loading finishes or undoes the interrupted replacement.
            now = load_identity(home)
            assert now.fingerprint == old or now.name == "new", step
        else:
            # A first init that died leaves the new identity whole (once it was
            # complete) or none, and then init works again: never "already exists".
            try:
                assert load_identity(home).name == "new", step
            except NotInitialised:
                assert create_identity(home, "again").name == "again"
        leftovers = [p.name for p in home.iterdir() if p.name.startswith(".identity.")]
        assert leftovers == [], (step, leftovers)
        step += 1
    assert step > 4  # the crash points covered every write, fsync and rename


def test_init_force_refuses_an_identity_with_paired_devices_unless_told(tmp_path: Path) -> None:
    old = create_identity(tmp_path, "old")
    with pytest.raises(PairedIdentity, match="pair again"):
        create_identity(tmp_path, "new", force=True, paired_devices=2)
    assert load_identity(tmp_path).fingerprint == old.fingerprint
    new = create_identity(tmp_path, "new", force=True, paired_devices=2, unpair_all=True)
    assert load_identity(tmp_path).fingerprint == new.fingerprint != old.fingerprint


# -- stores refused without being touched ---------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_from_a_newer_certpair_is_refused_untouched(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA user_version = 99")
    before = _digest(tmp_path / "trust.db")
    with pytest.raises(StoreUnusable, match="newer certpair"):
        open_store(tmp_path)
    assert _digest(tmp_path / "trust.db") == before
    with sqlite3.connect(tmp_path / "trust.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO photos (name) VALUES ('holiday')")
    before = _digest(tmp_path / "trust.db")
    with pytest.raises(StoreUnusable, match="not a certpair trust store"):
        open_store(tmp_path)
    assert _digest(tmp_path / "trust.db") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trust.db"]  # no WAL, no tables


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "trust.db").write_bytes(b"not a database at all" * 100)
    before = _digest(tmp_path / "trust.db")
    with pytest.raises(StoreUnusable, match="not an SQLite database"):
        open_store(tmp_path)
    assert _digest(tmp_path / "trust.db") == before


# -- a truncated store --------------------------------------------------------------------


def test_a_store_truncated_to_zero_bytes_is_reported_not_replaced(tmp_path: Path) -> None:
    create_identity(tmp_path, "alpha")
    with open_store(tmp_path) as store:
        store.commit_pairing(name="beta", cert_der=create_identity(tmp_path / "b", "beta")
                             .cert_der, mode="cpace", role="joiner", remote="x")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"trust.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "trust.db").write_bytes(b"")
    with pytest.raises(StoreUnusable, match="is empty"):
        open_store(tmp_path)
    assert (tmp_path / "trust.db").stat().st_size == 0
    _one_error_line(run(tmp_path, "peers"), 5, "a store existed here")
    (tmp_path / "trust.db").unlink()
    _one_error_line(run(tmp_path, "peers"), 5, "is missing")


def test_a_new_home_still_gets_a_new_store(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    assert open_store(tmp_path).peers() == []


# -- corrupt rows ---------------------------------------------------------------------------


def test_peers_flags_a_row_whose_fingerprint_does_not_match_its_certificate(
    tmp_path: Path,
) -> None:
    create_identity(tmp_path, "alpha")
    beta = create_identity(tmp_path / "b", "beta")
    with open_store(tmp_path) as store:
        store.commit_pairing(name="beta", cert_der=beta.cert_der, mode="cpace",
                             role="joiner", remote="x")
    damaged = bytearray(beta.cert_der)
    damaged[-5] ^= 0x01
    with sqlite3.connect(tmp_path / "trust.db") as db:
        db.execute("UPDATE peers SET cert_der = ?", (bytes(damaged),))
    with open_store(tmp_path) as store:
        (peer,) = store.peers()
        assert not peer.intact
    listed = run(tmp_path, "peers")
    assert listed.returncode == 0, listed.stderr
    assert "CORRUPT" in listed.stdout and "is corrupt" in listed.stderr
    as_json = run(tmp_path, "peers", "--json")
    assert '"intact": false' in as_json.stdout
    # Never exported: the bundle leaves it out and says why.
    exported = run(tmp_path, "export", "--json", "--out", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "peers.pem").read_bytes() == b""
    assert "damaged row" in exported.stdout
    assert run(tmp_path, "export", "--peer", "beta").returncode == 1


# -- rename racing unpair -------------------------------------------------------------------


def test_rename_racing_unpair_never_reports_renamed_after_the_removal(tmp_path: Path) -> None:
    create_identity(tmp_path, "alpha")
    cert = create_identity(tmp_path / "b", "beta").cert_der
    outcomes = []
    for _ in range(12):
        with open_store(tmp_path) as store:
            fp = store.commit_pairing(name="beta", cert_der=cert, mode="cpace",
                                      role="joiner", remote="x").fingerprint
        procs = [subprocess.Popen([*argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
                 for argv in (_argv(tmp_path, "rename", fp, "gamma"),
                              _argv(tmp_path, "unpair", fp))]
        (_, rename_err), _ = (p.communicate(timeout=60) for p in procs)
        renamed = procs[0].returncode == 0
        rows = [outcome for outcome, _ in events(tmp_path) if outcome in ("renamed", "removed")]
        if renamed:
            # Logged, and before the removal: it acted on a row that was there.
            assert rows[-2:] == ["renamed", "removed"], rows
        else:
            assert procs[0].returncode == 2 and "no paired device" in rename_err, rename_err
            assert rows[-1] == "removed"
        outcomes.append(renamed)
    assert len(outcomes) == 12


def _argv(home: Path, *args: str) -> list[str]:
    from tests.cliutil import certpair_argv

    return certpair_argv(home, *args)
