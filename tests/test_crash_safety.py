"""SIGKILL the offerer process at varied points of many pairings: the store stays whole.

The fault injection is a real ``certpair pair`` process killed with SIGKILL, either
a few milliseconds after the joiner's proof check succeeded (the offerer is then
checking the last message or committing) or at any moment of the pairing, with delays
drawn from a seeded RNG. All runs share one offerer home, so every run also opens a store a
killed process left behind (WAL recovery). After each kill the store must open, pass
``PRAGMA integrity_check``, and hold every peer together with its pairing event.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from certpair.codes import parse_secret
from certpair.errors import CertpairError
from certpair.identity import Identity, create_identity
from certpair.net import run_join
from certpair.store import TrustStore, open_store

RUNS = 15
SEED = 4_2026
CLI = [sys.executable, "-m", "certpair"]


def no_advertising() -> list[str]:
    """Keep the offerer off the network where the CLI can advertise itself."""
    from certpair.cli.pair_cmd import command

    return ["--no-advertise"] if any("--no-advertise" in p.opts for p in command.params) else []


def start_offerer(home: Path, mode: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [*CLI, "--home", str(home), "pair", "--json", "--listen", "127.0.0.1", "--port", "0",
         "--mode", mode, *no_advertising()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    listening: dict[str, Any] = json.loads(line)
    assert listening["event"] == "listening"
    return proc, listening


async def join_and_kill(
    proc: subprocess.Popen[str], joiner: Identity, store: TrustStore,
    listening: dict[str, Any], kill_at: str, delay: float,
) -> str:
    """Join, and SIGKILL the offerer ``delay`` seconds after the chosen moment.

    ``start``: after the join starts, anywhere in the pairing. ``paired``: after the
    joiner's own proof check succeeded, when the offerer is verifying its last message
    or committing (the hook is the joiner's store being asked to commit).
    """
    if kill_at == "start":
        asyncio.get_running_loop().call_later(delay, proc.kill)
    else:
        commit = store.commit_pairing

        def kill_then_commit(**kwargs: Any) -> Any:
            threading.Timer(delay, proc.kill).start()
            return commit(**kwargs)

        setattr(store, "commit_pairing", kill_then_commit)
    try:
        await run_join(identity=joiner, store=store, host="127.0.0.1", port=listening["port"],
                       secret=parse_secret(listening["code"]), timeout=5)
        return "joiner paired"
    except CertpairError as exc:
        return f"joiner failed ({type(exc).__name__})"


def check_store(home: Path) -> tuple[set[str], set[str]]:
    """Open the store as certpair does and as plain SQLite; return peers and paired events."""
    with open_store(home) as store:
        peers = {p.fingerprint for p in store.peers()}
        paired = [e.peer_fingerprint for e in store.events() if e.outcome == "paired"]
    db = sqlite3.connect(home / "trust.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute("SELECT fingerprint FROM peers").fetchall()
    finally:
        db.close()
    assert {fp for (fp,) in rows} == peers
    assert len(paired) == len(set(paired))  # one event per pairing, never two
    return peers, {fp for fp in paired if fp is not None}


def test_sigkilled_offerer_leaves_a_store_where_every_peer_has_its_event_and_vice_versa(
    tmp_path: Path,
) -> None:
    home = tmp_path / "alpha"
    create_identity(home, "alpha")
    open_store(home).close()
    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    for run in range(RUNS):
        mode = ("cpace", "hmac")[run % 2]
        # Half the runs die a few milliseconds after the joiner's proof check, when the
        # offerer is about to commit or committing; the rest anywhere in the pairing.
        if rng.random() < 0.5:
            kill_at, delay = "paired", rng.uniform(0.0, 0.004)
        else:
            kill_at, delay = "start", rng.uniform(0.0, 0.03)
        joiner = create_identity(tmp_path / f"joiner{run}", f"joiner{run}")
        proc, listening = start_offerer(home, mode)
        with open_store(tmp_path / f"joiner{run}") as joiner_store:
            outcome = asyncio.run(join_and_kill(proc, joiner, joiner_store, listening,
                                                kill_at, delay))
        proc.kill()  # if the kill point never came (the run failed before it)
        out, _ = proc.communicate(timeout=30)
        announced = any(json.loads(line).get("event") == "paired" for line in out.splitlines())

        peers, paired_events = check_store(home)
        assert peers == paired_events, f"run {run}: peers and pairing events disagree"
        if announced:  # what the offerer reported as done must have survived the kill
            assert joiner.fingerprint in peers
        stored = joiner.fingerprint in peers
        tally[f"{mode}, kill at {kill_at}: "
              f"{outcome}, offerer {'stored' if stored else 'did not store'} the joiner"] += 1
    print("\ncrash runs:", json.dumps(tally, indent=1))
