"""Hostile data from a peer never reaches a terminal or a shell (issue 11 §3).

A paired peer chose its certificate: its DNS names can carry escape sequences and shell
text. ``certpair export`` prints them escaped, and its suggested commands are made of
quoted words that a shell reads back as exactly certpair's own values.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from certpair.identity import create_identity
from certpair.store import open_store
from tests.attacks.forged_certs import forge_cert, p256

CLI = [sys.executable, "-m", "certpair"]
ESCAPE = "\x1b]0;owned\x07\x1b[2J"
SHELL = "x;touch${IFS}/tmp/certpair-owned;#"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "alpha"
    create_identity(home, "alpha")
    der = forge_cert(p256(), common_name="evil", dns=[f"{ESCAPE}.example", SHELL])
    with open_store(home) as store:
        store.commit_pairing(name="evil", cert_der=der, mode="cpace", role="offerer",
                             remote="test")
    return home


def _export(home: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--home", str(home), "export", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=60, check=True)


def test_export_prints_a_peer_s_escape_sequences_escaped(home: Path, tmp_path: Path) -> None:
    for args in ([], ["--peer", "evil"]):
        printed = _export(home, tmp_path / "out", *args).stdout
        assert "\x1b" not in printed and "\x07" not in printed
        assert "\\x1b]0;owned\\x07" in printed  # still there to read, as text


def test_export_recipes_are_words_a_shell_reads_back_as_certpair_s_own_values(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dir with spaces; and $(quotes)'"
    found = json.loads(_export(home, out, "--peer", "evil", "--json").stdout)
    curl = shlex.split(found["recipes"]["curl"])
    assert curl[0] == "curl"
    assert str(out.resolve() / "peers.pem") in curl  # one word, however odd the path
    assert not any("touch" in word or "\x1b" in word for word in curl)
    assert "HOST:4491:ADDRESS" in curl  # the peer's "names" are not host names
    openssl = found["recipes"]["openssl"]
    assert "touch" not in openssl and "\x1b" not in openssl
    first = shlex.split(openssl.split(" </dev/null")[0])
    assert first[:2] == ["openssl", "s_client"] and str(out.resolve() / "cert.pem") in first
    text = _export(home, out, "--peer", "evil").stdout
    assert "touch" not in "".join(line for line in text.splitlines()
                                  if line.lstrip().startswith(("curl", "openssl")))
