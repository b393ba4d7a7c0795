"""Unauthenticated traffic cannot grow the disk without bound (issue 10 §5).

Real adversaries: an unpaired device floods a real ``certpair serve`` process with real
mutual-TLS connections over loopback. Each refusal costs the attacker one handshake; it
must not cost the server one audit-log row. Refusals are counted per source host,
reason and minute into one row, and the log keeps at most CERTPAIR_LOG_MAX_ROWS rows,
dropping refusals before pairings. Synchronisation: ``serve --json`` prints each
refusal after logging it, so reading N lines means N refusals are in the store.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from certpair.identity import create_identity
from certpair.store import open_store
from certpair.trusted import client_context
from tests.attacks.forged_certs import knock, refused_joiner
from tests.cliutil import Offerer

CLI = [sys.executable, "-m", "certpair"]
WAIT = 60.0


class _Serve:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "--home", str(home), "serve", "--json", "--listen", "127.0.0.1",
             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env})
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])
        # Read while the flood runs: serve drops (and counts) lines nobody reads.
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def refusals_seen(self, n: int) -> None:
        """Read serve's lines until ``n`` refusals were reported (each one logged)."""
        seen = 0
        while seen < n:
            line = self.lines.get(timeout=WAIT)
            assert line, f"serve ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
            event = json.loads(line)
            seen += event.get("outcome") == "refused" or event.get("lines", 0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=WAIT)


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    """alpha (paired with beta: one ``paired`` row) and mallory, whom alpha never paired
    but who trusts alpha's certificate, so alpha is the side that refuses."""
    ids = {n: create_identity(tmp_path / n, n) for n in ("alpha", "beta", "mallory")}
    with open_store(tmp_path / "alpha") as store:
        store.commit_pairing(name="beta", cert_der=ids["beta"].cert_der, mode="cpace",
                             role="offerer", remote="127.0.0.1:1")
    with open_store(tmp_path / "mallory") as store:
        store.commit_pairing(name="alpha", cert_der=ids["alpha"].cert_der, mode="cpace",
                             role="joiner", remote="127.0.0.1:1")
    return tmp_path / "alpha", tmp_path / "mallory"


def _refused_connection(context: ssl.SSLContext, port: int, source: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT,
                                  source_address=(source, 0)) as raw, \
            context.wrap_socket(raw, server_hostname="certpair") as tls, \
            pytest.raises((ssl.SSLError, ConnectionError)):
        tls.recv(1)  # TLS 1.3: the server's refusal arrives on the first read


def test_a_flood_from_one_address_is_one_counted_row_per_minute(
    homes: tuple[Path, Path],
) -> None:
    alpha, mallory = homes
    flood = 400
    serve = _Serve(alpha, {})
    try:
        context = client_context(mallory)
        for _ in range(flood):
            _refused_connection(context, serve.port, "127.0.0.1")
        serve.refusals_seen(flood)
    finally:
        serve.stop()
    with open_store(alpha) as store:
        events = store.events()
    refused = [e for e in events if e.outcome == "refused"]
    # One row per minute the flood lasted (the old code wrote one row per connection).
    assert 1 <= len(refused) <= 5, len(refused)
    assert sum(e.count for e in refused) == flood
    assert {(e.kind, e.remote) for e in refused} == {("connection", "127.0.0.1")}
    assert len({e.reason for e in refused}) == 1
    assert [e.outcome for e in events if e.kind == "pairing"] == ["paired"]
    shown = subprocess.run([*CLI, "--home", str(alpha), "log", "--json"], text=True,
                           capture_output=True, timeout=WAIT, check=True)
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sum(r["count"] for r in rows if r["outcome"] == "refused") == flood


def test_a_flood_from_many_addresses_is_capped_and_keeps_the_pairing(
    homes: tuple[Path, Path],
) -> None:
    alpha, mallory = homes
    cap, sources = 40, 150
    serve = _Serve(alpha, {"CERTPAIR_LOG_MAX_ROWS": str(cap)})
    try:
        context = client_context(mallory)
        for i in range(sources):  # 127.0.0.2 ... : every one a different source host
            _refused_connection(context, serve.port, f"127.0.{i // 250}.{i % 250 + 2}")
        serve.refusals_seen(sources)
    finally:
        serve.stop()
    with open_store(alpha) as store:
        events = store.events()
    # Checked every cap // 10 inserts: never more than that past the cap (the traffic
    # budget; the pairing is a record, in a budget of its own).
    assert len(events) <= cap + cap // 10 + 1, len(events)
    assert [e.outcome for e in events if e.kind == "pairing"] == ["paired"]
    # The oldest refusals went; the newest source is still there.
    assert events[0].remote == f"127.0.0.{sources + 1}"
    assert "127.0.0.2" not in {e.remote for e in events}


def test_a_bad_row_cap_is_one_line_at_open(homes: tuple[Path, Path]) -> None:
    alpha, _ = homes
    result = subprocess.run([*CLI, "--home", str(alpha), "log"], check=False, text=True,
                            capture_output=True, timeout=WAIT,
                            env={**os.environ, "CERTPAIR_LOG_MAX_ROWS": "lots"})
    assert result.returncode == 5
    assert result.stderr.strip().count("\n") == 0
    assert "CERTPAIR_LOG_MAX_ROWS" in result.stderr


def test_a_flood_of_refused_joiners_is_one_counted_row_and_the_code_stays_valid(
    tmp_path: Path,
) -> None:
    # A joiner whose certificate breaks the profile is refused before any proof, so it
    # spends nothing and can repeat at will: ``pair`` must count it, not log each one.
    create_identity(tmp_path / "alpha", "alpha")
    context = refused_joiner(tmp_path)
    flood = 100
    offerer = Offerer(tmp_path / "alpha", advertise=False)
    try:
        port = int(offerer.listening["port"])
        for _ in range(flood):
            knock(context, port)
        refused = [offerer.next_event() for _ in range(flood)]
        assert {e["event"] for e in refused} == {"refused"}
    finally:
        offerer.kill()
    with open_store(tmp_path / "alpha") as store:
        events = store.events()
    assert 1 <= len(events) <= 5, len(events)
    assert sum(e.count for e in events) == flood
    assert {(e.kind, e.outcome, e.remote) for e in events} == {
        ("pairing", "failed", "127.0.0.1")}
