"""A full disk (issue 20, "Failures told truthfully"): every command's exit status and
message say what happened, and the commands that only read still work.

A small tmpfs filled to leave a few KiB: with less than the 32 KiB SQLite's shared-
memory index needs, no store opens the ordinary way; with a little more, the store
opens and the first write fails.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.identity import create_identity, load_identity
from certpair.rotation.pending import load_pending, start_rotation
from certpair.store import open_store
from tests.cliutil import run
from tests.diskutil import fill, small_disk


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    with small_disk(tmp_path / "disk", "1m") as where:
        yield where


def _empty(disk: Path) -> None:
    for entry in disk.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _home(disk: Path, beta_cert: bytes) -> Path:
    """alpha, paired with beta, on the disk (which is emptied first)."""
    _empty(disk)
    home = disk / "alpha"
    create_identity(home, "alpha")
    with open_store(home) as store:
        store.commit_pairing(name="beta", cert_der=beta_cert, mode="cpace", role="joiner",
                             remote="test")
    return home


@contextlib.contextmanager
def _read(home: Path) -> Iterator[sqlite3.Connection]:
    """The test's own look at the store (while :func:`_in_use` keeps it open)."""
    with contextlib.closing(sqlite3.connect(home / "trust.db")) as db:
        yield db


@contextlib.contextmanager
def _in_use(home: Path) -> Iterator[None]:
    """Keep the store open, as a running ``serve`` does: its shared-memory index stays,
    so the command opens the store and fails only when it writes."""
    with _read(home) as db:
        db.execute("SELECT count(*) FROM peers").fetchone()
        yield


def _rows(home: Path, kinds: tuple[str, ...]) -> list[str]:
    with _read(home) as db:
        marks = ",".join("?" * len(kinds))
        return [outcome for (outcome,) in db.execute(
            f"SELECT outcome FROM events WHERE kind IN ({marks}) ORDER BY id",
            kinds)]


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def _rotation(home: Path) -> tuple[str, str | None, list[str]]:
    pending = load_pending(home)
    return (load_identity(home).fingerprint, pending.fingerprint if pending else None,
            _rows(home, ("rotation",)))


@pytest.mark.parametrize("free_kib", [0, 12])
def test_each_rotation_step_on_a_full_disk_reports_what_it_did(
    disk: Path, tmp_path: Path, free_kib: int,
) -> None:
    beta = create_identity(tmp_path / "beta", "beta").cert_der
    for step in ("start", "finish", "abort"):
        home = _home(disk, beta)
        if step != "start":
            start_rotation(home)
        with _in_use(home):
            before = _rotation(home)
            fill(disk, leave_kib=free_kib)
            args = ("rotate",) if step == "start" else ("rotate", f"--{step}", "--force")
            result = run(home, *args)
            _no_traceback(result)
            after = _rotation(home)
        where = (step, free_kib, result.stderr)
        if result.returncode == 5:
            # Failed: nothing changed, and the message says why.
            assert after == before, where
            assert "the disk is full" in result.stderr, where
            continue
        assert result.returncode == 0, where
        done = {"start": after[1] is not None and after[1] != before[1],
                "finish": after[0] == before[1] and after[1] is None,
                "abort": after[0] == before[0] and after[1] is None}[step]
        assert done, where
        outcome = {"start": "started", "finish": "finished", "abort": "aborted"}[step]
        if after[2] != [*before[2], outcome]:
            # Done but not logged: said apart from the outcome, never as a failure.
            assert step != "start", where  # a start is undone instead
            assert after[2] == before[2], where
            assert "audit log has no row" in result.stderr, where
            assert "the disk is full" in result.stderr, where
        else:
            assert "Warning" not in result.stderr, where


@pytest.mark.parametrize("free_kib", [0, 12])
def test_unpair_rename_and_init_on_a_full_disk_change_nothing_when_they_fail(
    disk: Path, tmp_path: Path, free_kib: int,
) -> None:
    beta = create_identity(tmp_path / "beta", "beta").cert_der
    for args, kind in ((("unpair", "beta"), "unpairing"), (("rename", "beta", "gamma"),
                                                            "rename")):
        home = _home(disk, beta)
        with _in_use(home):
            fill(disk, leave_kib=free_kib)
            result = run(home, *args)
            _no_traceback(result)
            with _read(home) as db:
                names = [n for (n,) in db.execute("SELECT name FROM peers")]
            logged = _rows(home, (kind,))
        if result.returncode == 5:
            assert names == ["beta"] and logged == [], (args, result.stderr)
            assert "the disk is full" in result.stderr, result.stderr
        else:
            assert result.returncode == 0, result.stderr
            assert names == ([] if kind == "unpairing" else ["gamma"]) and len(logged) == 1
    # A first init: exit 5 means no identity was made (the store is made first).
    _empty(disk)
    fill(disk, leave_kib=free_kib)
    home = disk / "new"
    result = run(home, "init", "--name", "new")
    _no_traceback(result)
    made = (home / "identity" / "cert.pem").exists()
    if result.returncode == 5:
        assert not made and "the disk is full" in result.stderr, result.stderr
    else:
        assert result.returncode == 0 and made, result.stderr
        assert run(home, "peers").returncode == 0


@pytest.mark.parametrize("free_kib", [0, 24])
def test_reading_commands_work_on_a_full_disk_and_writers_say_it_is_full(
    disk: Path, tmp_path: Path, free_kib: int,
) -> None:
    beta = create_identity(tmp_path / "beta", "beta")
    home = _home(disk, beta.cert_der)
    with open_store(home) as store:
        store.record_event(kind="connection", role="server", remote="10.0.0.7:1", mode="mtls",
                           outcome="accepted", reason="", peer_fingerprint=beta.fingerprint,
                           peer_name="beta")
    fill(disk, leave_kib=free_kib)
    for args, says in ((("peers",), beta.fingerprint[:20]), (("peers", "--wide"), beta.fingerprint),
                       (("peers", "--json"), '"beta"'),
                       (("rotate", "--status"), "No rotation pending"),
                       (("log",), "10.0.0.7"), (("show",), "alpha")):
        result = run(home, *args)
        _no_traceback(result)
        assert result.returncode == 0, (args, result.stderr)
        assert says in result.stdout, (args, result.stdout)
    for writer in ("unpair beta", "rename beta gamma", "rotate"):
        result = run(home, *writer.split())
        _no_traceback(result)
        assert result.returncode == 5, (writer, result.stderr)
        assert "the disk is full" in result.stderr, (writer, result.stderr)
        assert "input/output" not in result.stderr
