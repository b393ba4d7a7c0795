"""Pairing while 1,000 idle or garbage-sending connections hit the offerer.

The offerer is a real ``certpair pair`` process; the load and the legitimate joiner
run in this process. Everything stays on 127.0.0.1, is bounded in count and time, and
stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from certpair.codes import parse_secret
from certpair.identity import create_identity, load_identity
from certpair.net import run_join
from certpair.store import open_store

CONNECTIONS = 1000
LOAD_SECONDS_CAP = 30.0


def raise_fd_limit() -> None:
    """Let this process hold the load's connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class _Offerer:
    def __init__(self, root: Path, index: int) -> None:
        self.home = root / f"alpha{index}"
        create_identity(self.home, "alpha")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "certpair", "--home", str(self.home), "pair", "--json",
             "--no-advertise", "--listen", "127.0.0.1", "--port", "0", "--ttl", "120"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        event = json.loads(self.proc.stdout.readline())
        self.port, self.code = int(event["port"]), str(event["code"])

    def finish(self) -> float:
        """Wait for the offerer to end; return its peak resident memory in MB."""
        assert self.proc.stdout is not None
        self.proc.stdout.read()  # the offerer ends once it has paired
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_maxrss / 1024  # Linux reports KiB


async def _join_timed(root: Path, offerer: _Offerer, index: int) -> float:
    home = root / f"beta{index}"
    create_identity(home, "beta")
    with open_store(home) as store:
        start = time.perf_counter()
        await run_join(identity=load_identity(home), store=store, host="127.0.0.1",
                       port=offerer.port, secret=parse_secret(offerer.code))
        return time.perf_counter() - start


def _loaded_join(root: Path, offerer: _Offerer, index: int,
                 counters: dict[str, int], interval: float) -> float:
    """Start the load generator process, pair once while it runs, stop it."""
    load = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", str(offerer.port), str(LOAD_SECONDS_CAP),
         "--connections", str(CONNECTIONS), "--interval", str(interval)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert load.stdout is not None
    try:
        if load.stdout.readline().strip() != "ready":
            raise RuntimeError("load generator did not start")
        return asyncio.run(asyncio.wait_for(_join_timed(root, offerer, index),
                                            LOAD_SECONDS_CAP))
    finally:
        out, _ = load.communicate(timeout=LOAD_SECONDS_CAP + 10)  # closes stdin: EOF stops it
        for key, value in json.loads(out.strip().splitlines()[-1]).items():
            counters[key] = counters.get(key, 0) + value


def pair_under_load(quick: bool = False) -> dict[str, Any]:
    """``pair_idle_ms``, ``pair_under_load_ms`` and ``offerer_rss_mb_under_load``.

    Under load: 500 idle connections, and 500 that send garbage and reconnect a second
    after being dropped. ``pair_under_flood_ms`` is the same with immediate reconnects
    (a closed-loop flood that keeps the offerer's CPU busy), reported for information.
    The offerer and the load generator are processes of their own; the joiner runs
    here, so the load does not slow the joiner's own event loop.
    """
    raise_fd_limit()
    repeats = 2 if quick else 5
    runs: dict[str, list[float]] = {"idle": [], "paced": [], "flood": []}
    rss: list[float] = []
    failures = 0
    counters: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="certpair-load-") as tmp:
        root = Path(tmp)
        index = 0
        for _ in range(repeats):
            for kind, values in runs.items():
                index += 1
                offerer = _Offerer(root, index)
                try:
                    if kind == "idle":
                        values.append(asyncio.run(_join_timed(root, offerer, index)))
                    else:
                        interval = 1.0 if kind == "paced" else 0.0
                        values.append(_loaded_join(root, offerer, index, counters, interval))
                except Exception:  # a failed pairing under load is a result
                    failures += 1
                peak = offerer.finish()
                if kind != "idle":
                    rss.append(peak)

    def median_ms(kind: str) -> float | None:
        return round(statistics.median(runs[kind]) * 1000, 2) if runs[kind] else None

    return {
        "pair_idle_ms": median_ms("idle"),
        "pair_under_load_ms": median_ms("paced"),
        "pair_under_flood_ms": median_ms("flood"),
        "pair_under_load_failures": failures,
        "offerer_rss_mb_under_load": round(max(rss), 1),
        "load": {"connections": CONNECTIONS, "repeats": repeats, **counters,
                 **{f"{kind}_ms": [round(x * 1000, 1) for x in values]
                    for kind, values in runs.items()}},
    }
