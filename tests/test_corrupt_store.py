"""A damaged trust store (issue 20, "Failures told truthfully"): bytes flipped inside
its data are found before the store is used, reported as corrupt with what to do, exit
5; nothing pairs, rotates or serves on it, and SQLite's raw text is never shown.

Three kinds of damage, each as a flipped byte leaves it: a peer's name that no longer
decodes as UTF-8, a certificate that no longer matches its fingerprint, and a peers
page whose b-tree header is broken. Real processes throughout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from pathlib import Path

import pytest

from certpair.identity import create_identity, load_identity
from certpair.store import open_store
from tests.cliutil import CLI, LOOPBACK, Proc, run

WAIT = 15.0


def _home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "alpha"
    create_identity(home, "alpha")
    fps = {}
    with open_store(home) as store:
        for name in ("beta", "gamma"):
            peer = create_identity(tmp_path / name, name)
            fps[name] = store.commit_pairing(name=name, cert_der=peer.cert_der, mode="cpace",
                                             role="joiner", remote="test").fingerprint
    return home, fps


def _damage(home: Path, kind: str, fp: str) -> None:
    path = home / "trust.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        if kind == "name":  # 'gamma' with its last byte flipped: not UTF-8 any more
            db.execute("UPDATE peers SET name = CAST(X'67616d6de1' AS TEXT)"
                       " WHERE fingerprint = ?", (fp,))
        elif kind == "certificate":
            (der,) = db.execute("SELECT cert_der FROM peers WHERE fingerprint = ?",
                                (fp,)).fetchone()
            damaged = bytearray(der)
            damaged[len(der) // 2] ^= 0x40
            db.execute("UPDATE peers SET cert_der = ? WHERE fingerprint = ?",
                       (bytes(damaged), fp))
        else:
            (root,) = db.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = 'peers'").fetchone()
            size = db.execute("PRAGMA page_size").fetchone()[0]
    if kind == "page":  # the peers table's root page: its b-tree page type, flipped
        with path.open("r+b") as raw:
            raw.seek((root - 1) * size)
            kind_byte = raw.read(1)
            raw.seek((root - 1) * size)
            raw.write(bytes([kind_byte[0] ^ 0x20]))


def _corrupt(result: subprocess.CompletedProcess[str], args: tuple[str, ...]) -> None:
    where = (args, result.stdout, result.stderr)
    assert result.returncode == 5, where
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, where
    assert "corrupt" in result.stderr or "damaged" in result.stderr, where
    assert "backup" in result.stderr, where  # what to do
    assert "Could not decode" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["name", "certificate", "page"])
def test_a_damaged_store_is_refused_before_anything_pairs_rotates_or_serves(
    tmp_path: Path, kind: str,
) -> None:
    home, fps = _home(tmp_path)
    _damage(home, kind, fps["gamma"])
    for args in (("rotate",), ("pair", "--listen", LOOPBACK, "--port", "0", "--json"),
                 ("serve", "--listen", LOOPBACK, "--port", "0", "--json"),
                 ("sync", "--all"),
                 ("tunnel", "serve", "--to", f"{LOOPBACK}:9", "--listen", LOOPBACK,
                  "--port", "0", "--no-advertise")):
        result = run(home, *args, timeout=WAIT)  # a command that started would not end
        _corrupt(result, args)
        assert result.stdout == "", (args, result.stdout)  # never listening
    assert not (home / "identity" / "next-cert.pem").exists()  # nothing rotated
    gamma = fps["gamma"][:20]
    if kind == "certificate":
        # A certificate that no longer matches stays listed, flagged; unpairing it is
        # the remedy, and then the store is whole again.
        listed = run(home, "peers")
        assert listed.returncode == 0 and "CORRUPT" in listed.stdout, listed.stderr
        assert run(home, "unpair", gamma).returncode == 0
        assert run(home, "rotate").returncode == 0
        return
    # Whatever reads the damaged row says so in one line.
    for reader in ("peers", "peers --json", f"export --out {tmp_path / 'out'}",
                   f"rename {gamma} delta", f"unpair {gamma}"):
        _corrupt(run(home, *reader.split()), tuple(reader.split()))


def test_a_store_damaged_while_serve_runs_is_a_refusal_never_a_traceback(
    tmp_path: Path,
) -> None:
    home, fps = _home(tmp_path)
    gamma = tmp_path / "gamma"
    with open_store(gamma) as store:  # gamma trusts alpha
        store.commit_pairing(name="alpha", cert_der=load_identity(home).cert_der,
                             mode="cpace", role="joiner", remote="test")
    server = Proc([*CLI, "--home", str(home), "serve", "--json", "--listen", LOOPBACK,
                   "--port", "0"])
    try:
        port = server.next_event(WAIT)["port"]
        _damage(home, "name", fps["gamma"])  # while serving
        pinged = run(gamma, "ping", f"{LOOPBACK}:{port}", "--timeout", str(WAIT))
        refusal = server.next_event(WAIT)
        server.proc.terminate()
        _, _, err = server.finish(WAIT)
    finally:
        server.kill()
    assert "Traceback" not in err and "Could not decode" not in err, err
    assert refusal["outcome"] == "refused", refusal
    assert refusal["reason"] == "this device's trust store is unusable", refusal
    assert pinged.returncode == 1 and "Traceback" not in pinged.stderr, pinged.stderr
    assert "its own trust store is unusable" in pinged.stderr, pinged.stderr
