"""``peers`` and ``log`` with many rows: pages, limits and a stream of JSON lines."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from certpair.identity import create_identity, fingerprint
from certpair.store import open_store
from tests.test_store import self_signed_certs

CLI = [sys.executable, "-m", "certpair"]


def _fill(home: Path, count: int) -> list[str]:
    """``count`` peers, many sharing a pairing time; returns fingerprints in list order."""
    ders = self_signed_certs(count)
    rows = [(fingerprint(d), f"p{i}", d, f"2026-01-01T00:00:{i % 7:02d}Z")
            for i, d in enumerate(ders)]
    with sqlite3.connect(home / "trust.db") as db:
        db.executemany("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                       " VALUES (?, ?, ?, 'cpace', ?)", rows)
        db.executemany("INSERT INTO events (at, kind, role, remote, mode, outcome, reason)"
                       " VALUES (?, 'connection', 'server', ?, 'cpace', 'refused', 'r')",
                       [(f"2026-01-01T00:00:{i % 60:02d}Z", f"10.0.0.{i}")
                        for i in range(300)])
    return [fp for fp, *_ in sorted(rows, key=lambda r: (r[3], r[0]))]


def _lines(home: Path, *args: str) -> list[str]:
    result = subprocess.run([*CLI, "--home", str(home), *args], capture_output=True,
                            text=True, timeout=120, check=True)
    return result.stdout.splitlines()


def test_iter_peers_pages_through_every_peer_in_order_across_equal_times(
    tmp_path: Path,
) -> None:
    open_store(tmp_path).close()
    order = _fill(tmp_path, 50)
    with open_store(tmp_path) as store:
        assert [p.fingerprint for p in store.iter_peers(page=7)] == order
        assert [p.fingerprint for p in store.peers_page(limit=5, offset=45)] == order[45:]
        assert store.count_peers() == 50


def test_peers_json_streams_one_object_per_line_and_pages_with_limit_and_offset(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hub"
    create_identity(home, "hub")
    open_store(home).close()
    order = _fill(home, 2_000)
    every = [json.loads(line) for line in _lines(home, "peers", "--json")]
    assert [row["fingerprint"] for row in every] == order
    assert all(row["flagged"] is None for row in every)
    page = [json.loads(line) for line in
            _lines(home, "peers", "--json", "--limit", "10", "--offset", "1995")]
    assert [row["fingerprint"] for row in page] == order[1995:]
    assert len(_lines(home, "peers", "--limit", "3")) == 4  # a header and 3 rows
    assert _lines(home, "peers", "--offset", "2000") == ["No more paired devices."]


def test_log_pages_back_with_offset(tmp_path: Path) -> None:
    home = tmp_path / "hub"
    create_identity(home, "hub")
    open_store(home).close()
    _fill(home, 1)
    newest = [json.loads(x)["remote"] for x in _lines(home, "log", "--json", "--limit", "5")]
    older = [json.loads(x)["remote"] for x in
             _lines(home, "log", "--json", "--limit", "5", "--offset", "5")]
    assert newest == [f"10.0.0.{i}" for i in range(299, 294, -1)]
    assert older == [f"10.0.0.{i}" for i in range(294, 289, -1)]


def test_unconfirmed_peers_is_one_bounded_read(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        for i, der in enumerate(self_signed_certs(8)):
            store.commit_pairing(name=f"p{i}", cert_der=der, mode="cpace", role="joiner",
                                 remote="t", confirmed=i % 2 == 0)
        found = store.unconfirmed_peers(limit=3)
        assert len(found) == 3 and not any(p.confirmed for p in found)
        assert {p.name for p in store.unconfirmed_peers(limit=10)} == {"p1", "p3", "p5", "p7"}
