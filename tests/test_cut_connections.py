"""A peer's ``serve`` SIGKILLed in the middle of a connection (issue 20, "Failures told
truthfully"): ``ping`` and ``sync`` say the connection was cut, exit 4, never that the
peer does not trust this device, never OpenSSL's raw text.

Real processes throughout. serve is held at a known point of the connection without
sleeping: the test holds the lock of serve's anchor directory, which serve takes right
after it stored something a peer's rotation brought (store/anchors.py), and it waits
for that store row; then it kills serve.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from certpair.identity import create_identity
from certpair.rotation.pending import finish_rotation, start_rotation
from certpair.store import open_store
from tests.cliutil import CLI, LOOPBACK

WAIT = 30.0


def _paired(root: Path) -> tuple[Path, Path]:
    alpha, beta = root / "alpha", root / "beta"
    a, b = create_identity(alpha, "alpha"), create_identity(beta, "beta")
    for home, other in ((alpha, b), (beta, a)):
        with open_store(home) as store:
            store.commit_pairing(name=other.name, cert_der=other.cert_der, mode="cpace",
                                 role="joiner", remote="test")
    return alpha, beta


@contextlib.contextmanager
def _anchors_held(home: Path) -> Iterator[None]:
    """Hold serve's anchor-directory lock: serve stops there after its next change of
    the trusted certificates, before it answers."""
    (home / "anchors").mkdir(exist_ok=True)
    fd = os.open(home / "anchors" / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _serve(home: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*CLI, "--home", str(home), "serve", "--json", "--listen",
                             LOOPBACK, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return proc, int(json.loads(line)["port"])


def _until_stored(home: Path, query: str, client: subprocess.Popen[str]) -> None:
    """Poll serve's store until ``query`` finds a row (serve committed it)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(home / "trust.db")) as db:
            if db.execute(query).fetchone() is not None:
                return
        assert client.poll() is None, client.communicate()
        time.sleep(0.01)  # a poll of the store's state, not a synchronisation by time
    raise AssertionError("serve never stored the row")


def _cut(alpha: Path, client_args: list[str], stored: str) -> subprocess.CompletedProcess[str]:
    """Run the client against alpha's serve; kill serve once ``stored`` finds its row."""
    server, port = _serve(alpha)
    try:
        with _anchors_held(alpha):
            client = subprocess.Popen(
                [*client_args, f"{LOOPBACK}:{port}", "--timeout", str(WAIT)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _until_stored(alpha, stored, client)
            server.kill()  # SIGKILL, in the middle of the client's connection
            out, err = client.communicate(timeout=WAIT)
    finally:
        server.kill()
        server.communicate(timeout=WAIT)
    return subprocess.CompletedProcess(client.args, client.returncode, out, err)


def _says_cut(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "was cut" in result.stderr, result.stderr
    assert "trust" not in result.stderr and "_ssl.c" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_sync_whose_serve_is_killed_before_it_answers_says_the_connection_was_cut(
    tmp_path: Path,
) -> None:
    alpha, beta = _paired(tmp_path)
    start_rotation(beta)
    # serve reads beta's whole rotation statement, stores the successor, then waits for
    # the anchor lock before answering: killed there, it leaves nothing unread (a FIN).
    result = _cut(alpha, [*CLI, "--home", str(beta), "sync"],
                  "SELECT 1 FROM successors WHERE state = 'pending'")
    _says_cut(result)


def test_ping_whose_serve_is_killed_before_it_answers_says_the_connection_was_cut(
    tmp_path: Path,
) -> None:
    alpha, beta = _paired(tmp_path)
    with open_store(alpha) as store:  # alpha learned beta's rotation; beta finished it
        store.learn_successor(store.peers()[0].fingerprint,
                              start_rotation(beta)[1].cert_der, remote="test")
    finish_rotation(beta)
    # beta's first connection under its new key completes the rotation in serve's
    # handshake; serve then waits for the anchor lock, beta's ping line unread.
    result = _cut(alpha, [*CLI, "--home", str(beta), "ping"],
                  "SELECT 1 FROM successors WHERE state = 'completed'")
    _says_cut(result)
