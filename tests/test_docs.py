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


def test_default_ports_are_documented_and_outside_every_ephemeral_range() -> None:
    from certpair.ports import PAIRING_PORT, SERVE_PORT, TUNNEL_PORT

    text = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(
        encoding="utf-8")
    ephemeral = [(32768, 60999), (10000, 65535), (49152, 65535)]  # Linux, FreeBSD, others
    for port in (PAIRING_PORT, SERVE_PORT, TUNNEL_PORT):
        assert str(port) in text
        assert port >= 1024 and not any(lo <= port <= hi for lo, hi in ephemeral), port


_PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def _section(title: str, *, fold: bool = True) -> str:
    """A section of PROTOCOL.md; with ``fold``, its white space folded to single spaces
    (the prose wraps anywhere)."""
    text = _PROTOCOL.read_text(encoding="utf-8")
    section = text.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]
    return " ".join(section.split()) if fold else section


def test_protocol_doc_frame_tables_list_every_frame_type_of_the_code() -> None:
    from certpair.protocol.frames import MAX_BODY, FrameType
    from certpair.protocol.sync_frames import MAX_SYNC_BODY, SyncFrameType

    frames, sync = _section("3. Frames"), _section("8. Sync")
    for member in FrameType:
        assert f"| `0x{member.value:02X}` | {member.name} |" in frames, member
    for sync_type in SyncFrameType:
        assert f"| `0x{sync_type.value:02x}` | {sync_type.name} |" in sync, sync_type
    assert "`0x21`\u2013`0x23`" in frames  # the pairing table names the §8 types as foreign
    assert f"cap is {MAX_SYNC_BODY}" in sync and f"cap there is {MAX_BODY}" in frames


def test_protocol_doc_error_reasons_and_sync_results_are_the_codes() -> None:
    from certpair.protocol.events import FailureReason
    from certpair.protocol.sync_frames import SyncResult

    frames, sync = _section("3. Frames"), _section("8. Sync")
    for reason in FailureReason:
        assert f"`{reason.value}`" in frames, reason
    for result in SyncResult:
        assert f"`{result.value}` {result.name}" in sync, result
    assert "nothing* statement is always ACCEPTED" in sync


def test_protocol_doc_line_protocol_numbers_are_the_codes() -> None:
    from certpair import serving as serve_cmd  # serve's server (its numbers)
    from certpair.cli import ping_cmd

    sync = _section("8. Sync")
    assert f"At most {serve_cmd.MAX_LINE} bytes per line" in sync
    assert f"at most {serve_cmd.MAX_LINES} lines per connection" in sync
    assert f"idle for {serve_cmd.IDLE_TIMEOUT:.0f} s" in sync
    assert f"up to {serve_cmd.MAX_HEADERS} header lines" in sync
    assert f"at most {ping_cmd._MAX_ANSWER:,} bytes" in sync
    assert '"peer_fingerprint"' in sync and "`ping` LF" in sync


def test_protocol_doc_rotation_transcript_length_prefixes_the_version_byte() -> None:
    vector = json.loads((Path(__file__).resolve().parent / "vectors" /
                         "rotation_vector.json").read_text(encoding="utf-8"))
    signed = bytes.fromhex(vector["signed_by_old_key_hex"])
    label = b"certpair/1 rotation: current key"
    assert signed[: 1 + len(label) + 2] == bytes([len(label)]) + label + b"\x01\x01"
    assert "encoded `01 01`" in _section("8. Sync")


def test_protocol_doc_lists_each_rule_of_the_certificate_profile() -> None:
    from certpair.profile import ProfileRule

    frames = _section("3. Frames", fold=False)
    profile = frames.split("**Certificate profile.**", 1)[1].split("Validity dates", 1)[0]
    numbered = [line for line in profile.splitlines() if line[:2] in {f"{n}." for n in
                                                                       range(1, 10)}]
    # one numbered rule per refusal the code names (parse failure and v1/v2 share rule 1,
    # CA:TRUE and no basicConstraints rule 2, keyCertSign and cRLSign rule 3)
    assert len(numbered) == len(ProfileRule) - 3 == 6, (numbered, list(ProfileRule))
    assert "Validity dates are **not** checked at pairing" in _section("3. Frames")


def test_protocol_doc_gives_the_exit_status_of_every_commitment_outcome() -> None:
    commitment = _section("6a. Commitment")
    for outcome in ("`ERROR(7)` received", "hmac: m2 never arrived", "unconfirmed"):
        assert outcome in commitment, outcome
