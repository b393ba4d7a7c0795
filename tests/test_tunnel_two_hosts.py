"""``certpair tunnel`` between two hosts: two network namespaces joined by a veth pair
(the fixture of tests/test_two_hosts.py), after a real pairing between them.

alpha pairs, then serves a web page on its own loopback through ``tunnel serve`` with
the defaults (every address, port 4492); beta, which joined, runs ``tunnel connect
alpha`` without ``--to`` (so the address it paired with is used) and fetches the page
with curl from its own loopback. Needs root, iproute2 and curl; skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cliutil import LOOPBACK, Offerer, Proc, certpair_argv, run
from tests.test_two_hosts import OFFERER_ADDRESS, TwoHosts, two_hosts

__all__ = ["two_hosts"]  # the fixture, shared with tests/test_two_hosts.py

CURL = shutil.which("curl")
WAIT = 30.0


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_tunnel_between_two_hosts_uses_the_pairing_address_and_default_port(
    two_hosts: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    offerer = Offerer(a, listen=OFFERER_ADDRESS, prefix=two_hosts.on_offerer)
    offerers.append(offerer)
    joined = run(b, "join", "--no-discovery", f"{OFFERER_ADDRESS}:{offerer.listening['port']}",
                 offerer.code, prefix=two_hosts.on_joiner)
    assert joined.returncode == 0, joined.stderr
    assert offerer.finish()[0] == 0

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.txt").write_text("from alpha's loopback\n")
    web = Proc([*two_hosts.on_offerer, sys.executable, "-u", "-m", "http.server", "0",
                "--bind", LOOPBACK, "--directory", str(tmp_path / "www")])
    offerers.append(web)
    web_port = int(web.next_line().split(" port ")[1].split()[0])  # "Serving HTTP on … port N"
    server = Proc(certpair_argv(a, "tunnel", "serve", "--to", f"{LOOPBACK}:{web_port}",
                                "--no-advertise", "--json", prefix=two_hosts.on_offerer))
    offerers.append(server)
    assert server.next_event()["port"] == 4492
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--listen", "0", "--json",
                                prefix=two_hosts.on_joiner))
    offerers.append(client)
    listening = client.next_event()
    assert (listening["remote"], listening["address_from"]) == (
        f"{OFFERER_ADDRESS}:4492", "pairing")
    assert CURL is not None
    got = subprocess.run([*two_hosts.on_joiner, CURL, "-sS", "--fail", "--max-time",
                          str(WAIT), f"http://{LOOPBACK}:{listening['port']}/index.txt"],
                         capture_output=True, text=True, timeout=WAIT, check=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "from alpha's loopback\n"
    opened = server.next_event()
    assert opened["event"] == "opened" and opened["peer"]["name"] == "beta"
    assert json.loads(json.dumps(opened))["remote"].startswith("10.231.0.2:")
