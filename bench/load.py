"""Pairing while 1,000 idle or garbage-sending connections hit the offerer.

The offerer is a real ``certpair pair`` process; the load and the legitimate joiner
run in this process. Everything stays on 127.0.0.1, is bounded in count and time, and
stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from certpair.net.pairing import run_join
from certpair.store import open_store

CONNECTIONS = 1000
LOAD_SECONDS_CAP = 30.0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Offerer:
    def __init__(self, root: Path, index: int) -> None:
        self.home = root / f"alpha{index}"
        create_identity(self.home, "alpha")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "certpair", "--home", str(self.home), "pair", "--json",
             "--listen", "127.0.0.1", "--port", "0", "--ttl", "120"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        event = json.loads(self.proc.stdout.readline())
        self.port, self.code = int(event["port"]), str(event["code"])

    def finish(self) -> float:
        rss = _peak_rss_mb(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        return rss


async def _load(port: int, stop: asyncio.Event, counters: dict[str, int]) -> None:
    """Half the connections sit idle, half keep sending garbage and reconnecting."""
    writers: list[asyncio.StreamWriter] = []

    async def idle() -> None:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            counters["idle"] += 1

    async def garbage() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(os.urandom(512))
                await writer.drain()
                counters["garbage"] += 1
                await asyncio.wait_for(reader.read(4096), 1.0)
                writer.close()
            except (OSError, TimeoutError):
                counters["errors"] += 1
                await asyncio.sleep(0.01)  # back off after a refused connection

    half = CONNECTIONS // 2
    await asyncio.gather(*(idle() for _ in range(half)))
    garbage_tasks = [asyncio.ensure_future(garbage()) for _ in range(half)]
    await stop.wait()
    for task in garbage_tasks:
        task.cancel()
    await asyncio.gather(*garbage_tasks, return_exceptions=True)
    for writer in writers:
        writer.close()


async def _join_timed(root: Path, offerer: _Offerer, index: int) -> float:
    home = root / f"beta{index}"
    create_identity(home, "beta")
    with open_store(home) as store:
        start = time.perf_counter()
        await run_join(identity=load_identity(home), store=store, host="127.0.0.1",
                       port=offerer.port, secret=parse_secret(offerer.code))
        return time.perf_counter() - start


def pair_under_load(quick: bool = False) -> dict[str, Any]:
    """``pair_idle_ms``, ``pair_under_load_ms`` and ``offerer_rss_mb_under_load``."""
    _raise_fd_limit()
    repeats = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="certpair-load-") as tmp:
        root = Path(tmp)
        idle, loaded, rss, failures = [], [], [], 0
        counters = {"idle": 0, "garbage": 0, "errors": 0}
        for i in range(repeats):
            offerer = _Offerer(root, 2 * i)
            idle.append(asyncio.run(_join_timed(root, offerer, 2 * i)))
            offerer.finish()

            offerer = _Offerer(root, 2 * i + 1)

            async def loaded_run(off: _Offerer = offerer, n: int = 2 * i + 1) -> float:
                stop = asyncio.Event()
                load = asyncio.ensure_future(_load(off.port, stop, counters))
                # Let the idle half connect and the garbage half start before joining.
                while counters["idle"] < (n // 2 + 1) * (CONNECTIONS // 2) and not load.done():
                    await asyncio.sleep(0.01)
                try:
                    return await asyncio.wait_for(_join_timed(root, off, n), LOAD_SECONDS_CAP)
                finally:
                    stop.set()
                    await load

            try:
                loaded.append(asyncio.run(loaded_run()))
            except Exception:  # a failed pairing under load is a result
                failures += 1
            rss.append(offerer.finish())
    return {
        "pair_idle_ms": round(statistics.median(idle) * 1000, 2),
        "pair_under_load_ms": round(statistics.median(loaded) * 1000, 2) if loaded else None,
        "pair_under_load_failures": failures,
        "offerer_rss_mb_under_load": round(max(rss), 1),
        "load": {"connections": CONNECTIONS, "repeats": repeats, **counters,
                 "idle_ms": [round(x * 1000, 1) for x in idle],
                 "loaded_ms": [round(x * 1000, 1) for x in loaded]},
    }
