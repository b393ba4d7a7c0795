"""Local files as strict as the pairing (issue 19).

Another local user who can write a home, its ``identity/`` or its ``trust.db`` can make
this device trust their certificate (a 0777 home let one swap in a ``trust.db`` that
trusts theirs). Such paths are refused, as ssh's StrictModes does: exit 5 and one line
with the ``chmod``/``chown`` that fixes it. ``trust.db`` and its WAL/SHM are created
0600 whatever the umask; ``export`` writes through no planted symlink, refuses a
directory others can write, and creates its files 0600 in a 0700 directory. Real
processes; root changes owners and modes as the other user would find them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from certpair.identity import create_identity
from certpair.store import open_store

CLI = [sys.executable, "-m", "certpair"]
NOBODY = 65534


def _run(home: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=60, check=False, umask=umask)


def _refused(result: subprocess.CompletedProcess[str], fix: str) -> None:
    assert result.returncode == 5, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fix in result.stderr, result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """alpha, paired with beta; and evil, whom nobody paired."""
    ids = {n: create_identity(tmp_path / n, n) for n in ("alpha", "beta", "evil")}
    with open_store(tmp_path / "alpha") as store:
        store.commit_pairing(name="beta", cert_der=ids["beta"].cert_der, mode="cpace",
                             role="offerer", remote="127.0.0.1:1")
    with open_store(tmp_path / "evil") as store:  # the store evil would swap in
        store.commit_pairing(name="evil", cert_der=ids["evil"].cert_der, mode="cpace",
                             role="offerer", remote="127.0.0.1:1")
    return tmp_path / "alpha"


def test_a_world_writable_home_with_a_swapped_trust_store_is_refused(home: Path) -> None:
    home.chmod(0o777)
    # What the other user does in it: replace trust.db with one that trusts them.
    os.replace(home.parent / "evil" / "trust.db", home / "trust.db")
    for command in ("peers", "serve", "show"):
        _refused(_run(home, command), f"chmod go-w {home}")
    home.chmod(0o700)  # the fix the line names: then it runs again
    assert _run(home, "peers").returncode == 0


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_an_identity_directory_others_can_write_is_refused(home: Path, mode: int) -> None:
    (home / "identity").chmod(mode)
    _refused(_run(home, "show"), f"chmod go-w {home / 'identity'}")


def test_a_trust_store_others_can_write_or_another_user_owns_is_refused(home: Path) -> None:
    store = home / "trust.db"
    store.chmod(0o666)
    _refused(_run(home, "peers"), f"chmod go-w {store}")
    store.chmod(0o600)
    os.chown(store, NOBODY, NOBODY)
    _refused(_run(home, "peers"), f"chown root {store}")
    os.chown(home, NOBODY, NOBODY)
    _refused(_run(home, "peers"), f"chown root {home}")


def test_the_trust_store_and_its_wal_and_shm_are_0600_under_umask_000(tmp_path: Path) -> None:
    home = tmp_path / "h"
    old = os.umask(0)
    try:
        create_identity(home, "alpha")
        with open_store(home) as store:
            store.record_event(kind="connection", role="server", remote="127.0.0.1:1",
                               mode="mtls", outcome="accepted", reason="")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()
                     if p.name.startswith("trust.db")}
    finally:
        os.umask(old)
    assert set(modes) == {"trust.db", "trust.db-wal", "trust.db-shm"}, modes
    assert set(modes.values()) == {0o600}, modes


def test_export_writes_through_no_planted_symlink_and_refuses_a_shared_directory(
    home: Path, tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    for name in (".peers.pem.tmp", ".cert.pem.tmp"):  # left there, or planted earlier
        (out / name).symlink_to(victim)
    assert _run(home, "export", "--out", str(out)).returncode == 0
    assert victim.read_text() == "keep"
    assert (out / "peers.pem").read_text().count("BEGIN CERTIFICATE") == 1
    out.chmod(0o777)  # a directory another user can write in: they could swap the bundle
    _refused(_run(home, "export", "--out", str(out)), f"chmod go-w {out}")


def test_exports_are_0600_in_a_0700_directory_under_umask_000(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "export"
    result = _run(home, "export", "--out", str(out), umask=0)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in ("cert.pem", "peers.pem"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["cert.pem", "peers.pem"]
