"""docs/ARCHITECTURE.md names every layer of the import contract lint-imports checks, and
only files that exist (the reading order of each flow cannot go stale)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layer_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = (c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers")
    return {
        name.strip().strip("()")
        for layer in layers["layers"]
        for name in re.split(r"[|:]", layer)
    }


def test_architecture_doc_names_every_layer_of_the_contract() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = _layer_modules()
    assert {"protocol", "cli", "store", "errors"} <= modules
    missing = sorted(m for m in modules if f"`{m}`" not in doc and f"`{m}/`" not in doc)
    assert missing == []


def test_every_file_the_doc_names_by_its_path_exists() -> None:
    # "Reading a flow" tells a maintainer which files to open: a moved or renamed module
    # must move there too. Paths are under src/certpair/, src/ or the repository (bench/).
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    flows = doc[doc.index("### Reading a flow"):doc.index("## The life of a pairing")]
    named = set(re.findall(r"`([\w/]+/[\w]+\.py)`", doc)) | set(
        re.findall(r"`([\w/]+\.py)`", flows))
    assert {"net/join.py", "tunnel/server.py", "rotation/fleet.py", "tls.py"} <= named
    roots = (ROOT / "src" / "certpair", ROOT / "src", ROOT)
    gone = sorted(p for p in named if not any((root / p).is_file() for root in roots))
    assert gone == [], f"docs/ARCHITECTURE.md names files that do not exist: {gone}"
