"""tests/README.md maps every module to the tests that exercise it, and cannot go
stale: every module under src/certpair is named (by its path or its package's
directory), every file it names exists, and every test file
(and helper) is named at least once."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "tests" / "README.md"
PACKAGE = ROOT / "src" / "certpair"


def named() -> set[str]:
    """Every `src/...` or `tests/...` path the map names in backticks."""
    return set(re.findall(r"`((?:src|tests)/[\w./-]+)`", MAP.read_text(encoding="utf-8")))


def test_every_module_is_in_the_map_by_its_path_or_its_package() -> None:
    paths = named()
    missing = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(ROOT).as_posix()
        package = module.parent.relative_to(ROOT).as_posix() + "/"
        if relative in paths or (module.parent != PACKAGE and package in paths):
            continue
        missing.append(relative)
    assert not missing, f"add these modules to tests/README.md: {missing}"


def test_every_file_the_map_names_exists() -> None:
    gone = sorted(p for p in named() if not (ROOT / p).exists())
    assert not gone, f"tests/README.md names files that do not exist: {gone}"


def test_every_test_file_and_helper_is_in_the_map() -> None:
    paths = named()
    unlisted = sorted(path for t in (ROOT / "tests").rglob("*.py")
                      if t.name != "__init__.py"
                      and (path := t.relative_to(ROOT).as_posix()) not in paths)
    assert not unlisted, f"add these files to tests/README.md: {unlisted}"


def test_the_check_sees_what_it_checks() -> None:
    # A map the regular expression cannot read would pass the three tests above.
    paths = named()
    assert "tests/test_tunnel_relay.py" in paths
    assert "src/certpair/tunnel/pump.py" in paths
    assert "src/certpair/store/" in paths
