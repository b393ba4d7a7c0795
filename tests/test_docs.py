"""docs/PROTOCOL.md publishes the same vectors the tests check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["hmac_vector.json", "cpace_vector.json",
                                  "rotation_vector.json"])
def test_protocol_doc_shows_every_vector_value(name: str) -> None:
    doc = "".join((ROOT / "docs" / "PROTOCOL.md").read_text().split())
    vector = json.loads((ROOT / "tests" / "vectors" / name).read_text())
    missing = [k for k, v in vector.items() if k.endswith("_hex") and v not in doc]
    assert missing == []


def test_protocol_doc_damm_table_is_the_one_the_codes_use() -> None:
    from certpair.codes import _DAMM_TABLE

    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    block = text.split("Damm check digit:", 1)[1].split("```", 2)[1]
    rows = [line.split(":", 1)[1].split() for line in block.splitlines() if ":" in line]
    assert tuple(tuple(int(d) for d in row) for row in rows) == _DAMM_TABLE


def test_protocol_doc_hmac_key_example_gives_the_vector_key() -> None:
    from certpair.codes import parse_secret

    text = " ".join((ROOT / "docs" / "PROTOCOL.md").read_text().split())
    vector = json.loads((ROOT / "tests" / "vectors" / "hmac_vector.json").read_text())
    for typed in ("000G-40R4-0M30-E209-B", "ooog 40r4 0m30 e209 b"):
        assert f"`{typed}`" in text
        assert parse_secret(typed).value.hex() == vector["key_hex"]
    assert "n = 16 characters" in text


def test_protocol_doc_alpn_table_is_the_names_the_ports_use() -> None:
    import re

    from certpair.ports import ALPN_PAIRING, ALPN_SERVE, ALPN_SERVICES, ALPN_TUNNEL, alpn_offer

    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    section = text.split("## 2. Transport", 1)[1].split("## 3.", 1)[0]
    table = dict(re.findall(r"^\s*\| [^|]+ \| `(certpair[^`]*)` \| `(certpair/[^`]+)` \|$",
                            section, re.MULTILINE))
    assert table == {"certpair pair": ALPN_PAIRING, "certpair serve": ALPN_SERVE,
                     "certpair tunnel serve": ALPN_TUNNEL}
    assert set(ALPN_SERVICES) == set(table.values())
    # Each client offers its own name first, then the trusted others (what the text says).
    flat = " ".join(section.split())
    for own in ALPN_SERVICES:
        assert alpn_offer(own)[0] == own
        assert ", ".join(f"`{n}`" for n in alpn_offer(own)) in flat
