"""docs/ARCHITECTURE.md names every layer of the import contract lint-imports checks."""

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
