"""The ``--qr-png`` image holds the live secret: it is created 0600 with O_EXCL, never
readable by others (even under umask 000), and never written through an existing file
(issue 10 §4)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.errors import BadInput
from certpair.uri import write_qr_png
from tests.cliutil import run

URI = "certpair://127.0.0.1:48620/?code=1234-5678"


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_new_image_is_0600_under_umask_000(tmp_path: Path) -> None:
    png = tmp_path / "pair.png"
    write_qr_png(URI, png)
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.usefixtures("open_umask")
def test_existing_file_is_refused_not_written_through(tmp_path: Path) -> None:
    png = tmp_path / "pair.png"
    png.write_bytes(b"someone else's")
    png.chmod(0o644)
    with pytest.raises(BadInput, match="already exists"):
        write_qr_png(URI, png)
    assert png.read_bytes() == b"someone else's"
    # A planted symlink is not followed either.
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "link.png"
    link.symlink_to(victim)
    with pytest.raises(BadInput, match="already exists"):
        write_qr_png(URI, link)
    assert victim.read_bytes() == b"keep"


@pytest.mark.usefixtures("open_umask")
def test_replace_is_atomic_and_0600(tmp_path: Path) -> None:
    png = tmp_path / "pair.png"
    png.write_bytes(b"old")
    png.chmod(0o644)
    before = png.stat().st_ino
    write_qr_png(URI, png, replace=True)
    assert png.stat().st_ino != before  # a new file renamed over, not rewritten in place
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    assert png.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair.png"]


def test_pair_refuses_an_existing_file_unless_force(tmp_path: Path) -> None:
    png = tmp_path / "pair.png"
    png.write_bytes(b"keep")
    result = run(tmp_path / "home", "pair", "--qr-png", str(png), "--no-advertise",
                 "--port", "0", timeout=30)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert png.read_bytes() == b"keep"
