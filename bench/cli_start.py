"""How long the ``certpair`` command takes to start: ``--version``, ``--help`` and
``show`` as whole processes, against ``python -c pass`` in the same run.

Wall time is what a user waits; the CPU time of the child (``RUSAGE_CHILDREN``) is
beside it, because on a shared machine it moves far less than wall time does.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import Figure, python_env, summary


def _certpair() -> list[str]:
    """The installed console script, as a user runs it (else ``python -m certpair``)."""
    script = Path(sys.executable).with_name("certpair")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certpair"]


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def cli_start(quick: bool = False) -> Figure:
    """``cli_version_ms``, ``cli_help_ms``, ``cli_show_ms``: medians of whole processes,
    runs interleaved with each other and with a bare interpreter."""
    repeats = 7 if quick else 21
    env = python_env()
    with tempfile.TemporaryDirectory(prefix="certpair-bench-cli-") as tmp:
        home = str(Path(tmp) / "home")
        subprocess.run([*_certpair(), "--home", home, "init", "--name", "bench"], check=True,
                       capture_output=True)
        runs = {
            "version": [*_certpair(), "--version"],
            "help": [*_certpair(), "--help"],
            "show": [*_certpair(), "--home", home, "show"],
            "python_bare": [sys.executable, "-c", "pass"],
        }
        for args in runs.values():  # the byte code cached, as an install has it
            _timed(args, env)
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, args in runs.items():
                w, c = _timed(args, env)
                wall[name].append(w)
                cpu[name].append(c)
    detail = {name: {"wall_ms": summary(wall[name], 1000), "cpu_ms": summary(cpu[name], 1000)}
              for name in runs}
    return {
        "cli_version_ms": detail["version"]["wall_ms"]["median"],
        "cli_help_ms": detail["help"]["wall_ms"]["median"],
        "cli_show_ms": detail["show"]["wall_ms"]["median"],
        # The same processes' CPU time: what wall time is on a quiet machine, and far
        # steadier than it on a busy one.
        "cli_version_cpu_ms": detail["version"]["cpu_ms"]["median"],
        "cli_help_cpu_ms": detail["help"]["cpu_ms"]["median"],
        "cli_show_cpu_ms": detail["show"]["cpu_ms"]["median"],
        "cli_start": detail,
    }


__all__ = ["cli_start"]
