"""A full disk for the tests that need one: a small tmpfs of their own, filled on demand."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

KIB = 1024


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount``'s spelling: ``1m``) mounted at ``where``, made here,
    and unmounted afterwards. Skips the test where mounting needs root."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs (a full disk)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, *, leave_kib: int = 0) -> None:
    """Fill the disk, then give back ``leave_kib`` KiB (tmpfs counts whole 4 KiB pages)."""
    filler = disk / "filler"
    # Unbuffered: a buffered file's close would flush into the full disk and raise.
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    os.truncate(filler, max(0, filler.stat().st_size - leave_kib * KIB))
