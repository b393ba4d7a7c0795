"""docs/PROTOCOL.md publishes the same vectors the tests check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["hmac_vector.json", "cpace_vector.json"])
def test_protocol_doc_shows_every_vector_value(name: str) -> None:
    doc = "".join((ROOT / "docs" / "PROTOCOL.md").read_text().split())
    vector = json.loads((ROOT / "tests" / "vectors" / name).read_text())
    missing = [k for k, v in vector.items() if k.endswith("_hex") and v not in doc]
    assert missing == []
