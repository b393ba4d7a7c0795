"""``join -`` reads a ``certpair://`` URI from standard input as well as a bare secret, so
a URI (address, secret, fingerprint) never has to be on the command line, where other
local users can read it; it takes the URI argument's path, fingerprint pin included
(issue 10 §4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from certpair.uri import format_uri, parse_uri
from tests.cliutil import Offerer, Proc, cert_fingerprint, certpair_argv, events, peers


def _join_stdin(home: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(certpair_argv(home, "join", *args, "-"), input=text + "\n",
                          capture_output=True, text=True, timeout=60, check=False)


def test_uri_on_stdin_with_a_forged_fingerprint_is_refused_before_any_proof(
    homes: tuple[Path, Path], offerers: list[Proc]
) -> None:
    a, b = homes
    offerer = Offerer(a, "--once", "--qr", advertise=False)
    offerers.append(offerer)
    good = parse_uri(offerer.listening["uri"])
    forged = format_uri(host=good.host, port=good.port, secret=good.secret,
                        fingerprint=cert_fingerprint(b))
    result = _join_stdin(b, forged)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ("Error: pairing failed: the offerer's certificate does not match "
                             "the expected fingerprint\n")
    assert peers(b) == [] and peers(a) == []
    assert events(b) == [("failed", "certificate mismatch")]
    # The pin acted before any proof: the --once offer is open and the real URI pairs.
    assert offerer.proc.poll() is None
    result = _join_stdin(b, offerer.listening["uri"])
    assert result.returncode == 0, result.stderr
    assert [p["fingerprint"] for p in peers(b)] == [cert_fingerprint(a)]
    assert offerer.finish()[0] == 0


def test_uri_on_stdin_next_to_an_address_is_refused(homes: tuple[Path, Path]) -> None:
    _, b = homes
    uri = format_uri(host="127.0.0.1", port=1, secret=parse_uri(
        "certpair://127.0.0.1:1/?code=1234-5678-6").secret, fingerprint=None)
    result = _join_stdin(b, uri, "127.0.0.1")
    assert result.returncode == 2
    assert "give it alone" in result.stderr and "1234" not in result.stderr
