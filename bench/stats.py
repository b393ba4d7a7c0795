"""What every figure module shares: the summary of samples, and process accounting.

No figure lives here, and this module imports no other ``bench`` module, so that the
figure modules depend on it and never on each other.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

Figure = dict[str, Any]

_TICK = os.sysconf("SC_CLK_TCK")


def summary(samples: list[float], scale: float = 1.0) -> Figure:
    """Median and spread of samples (optionally scaled, e.g. s -> ms)."""
    values = sorted(x * scale for x in samples)
    return {"median": round(statistics.median(values), 4), "min": round(values[0], 4),
            "max": round(values[-1], 4), "n": len(values)}


def python_env() -> dict[str, str]:
    """The environment for the Python processes a figure starts: byte code cached (in a
    folder of its own, so the source tree stays clean), as an installed package has it.
    Without this, ``PYTHONDONTWRITEBYTECODE`` would make every start compile every
    module, which costs time and memory no user pays."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "certpair-bench-pycache")
    return env


def ratio(numerator: float, denominator: float, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded, or None without a denominator."""
    return round(numerator / denominator, digits) if denominator else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process (all its threads) has used so far
    (Linux ``/proc/PID/stat``). Under load, CPU time moves far less than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a running process so far (``VmHWM``), in MB."""
    return _status_kb(pid, "VmHWM:") / 1024


def rss_mb(pid: int) -> float:
    """Resident memory of a running process now (``VmRSS``), in MB."""
    return _status_kb(pid, "VmRSS:") / 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


__all__ = ["Figure", "cpu_seconds", "peak_rss_mb", "python_env", "ratio", "rss_mb", "summary"]
