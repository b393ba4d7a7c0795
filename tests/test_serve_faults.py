"""``serve`` and ``pair`` under local faults (issue 11 section 2): stdout that nobody
reads, a full disk, a flood; each store failure is one line with its cause."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from certpair.identity import create_identity
from certpair.store import open_store
from tests.cliutil import LOOPBACK, Offerer, certpair_argv, run
from tests.diskutil import fill, small_disk

WAIT = 60


def _paired(alpha: Path, beta: Path) -> tuple[Path, Path]:
    a, b = create_identity(alpha, "alpha"), create_identity(beta, "beta")
    for home, other in ((alpha, b), (beta, a)):
        with open_store(home) as store:
            store.commit_pairing(name=other.name, cert_der=other.cert_der, mode="cpace",
                                 role="joiner", remote="test")
    return alpha, beta


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def _serve(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``serve --json``; its first line is read for the port, then stdout never again:
    a pipe nobody reads, full after ~64 KiB."""
    proc = subprocess.Popen(certpair_argv(home, "serve", "--json", "--listen", LOOPBACK,
                                          "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first, proc.stderr.read() if proc.stderr else b""
    return proc, int(json.loads(first)["port"])


def test_serve_keeps_serving_paired_devices_when_nobody_reads_its_output(
    tmp_path: Path,
) -> None:
    alpha, beta = _paired(tmp_path / "alpha", tmp_path / "beta")
    server, port = _serve(alpha)
    try:
        # ~3,000 refused connections print far more than a pipe holds.
        for _ in range(3000):
            with socket.create_connection((LOOPBACK, port), 5):
                pass
        pinged = run(beta, "ping", f"{LOOPBACK}:{port}", "--timeout", "10")
        assert pinged.returncode == 0, pinged.stderr
        assert _threads(server.pid) < 300  # bounded, whatever the flood
    finally:
        server.kill()
        server.communicate(timeout=WAIT)


def test_serve_on_a_full_disk_serves_and_says_so_in_one_line(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        alpha, beta = _paired(disk / "alpha", tmp_path / "beta")
        server, port = _serve(alpha)
        try:
            fill(disk)
            pings = [run(beta, "ping", f"{LOOPBACK}:{port}", "--timeout", "10")
                     for _ in range(3)]
        finally:
            server.terminate()
            raw_out, raw_err = server.communicate(timeout=WAIT)
        out, err = raw_out.decode(), raw_err.decode()
        assert "Traceback" not in out + err, err
        assert [p.returncode for p in pings] == [0, 0, 0], [p.stderr for p in pings]
        notes = [json.loads(line)["text"] for line in out.splitlines()
                 if json.loads(line)["event"] == "note"]
        assert len(notes) == 1 and "the disk is full" in notes[0], notes


def test_pair_on_a_full_disk_ends_in_one_line_and_the_joiner_stores_nothing(
    tmp_path: Path,
) -> None:
    beta = tmp_path / "beta"
    create_identity(beta, "beta")
    with small_disk(tmp_path / "disk", "2m") as disk:
        alpha = disk / "alpha"
        create_identity(alpha, "alpha")
        open_store(alpha).close()
        offerer = Offerer(alpha, "--once", advertise=False)
        try:
            fill(disk)
            joined = run(beta, "join", offerer.address, offerer.code)
            code, _, err = offerer.finish(WAIT)
        finally:
            offerer.kill()
    assert joined.returncode == 1 and "offerer could not store" in joined.stderr, joined.stderr
    assert code == 5, err
    assert "Traceback" not in err and "never retrieved" not in err, err
    assert err.count("\n") == 1 and "disk is full" in err, err
    with open_store(beta) as store:
        assert store.peers() == []
