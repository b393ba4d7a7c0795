"""A paired device is reached by its name wherever it is on the LAN: two hosts (the network
namespaces of tests/test_two_hosts.py), real processes.

alpha moves to a new address (``ip addr``) and restarts its ``serve`` / ``tunnel
serve``: beta's ``ping alpha`` and a new ``tunnel connect alpha`` find it by the
announcement carrying alpha's fingerprint, raced with the addresses beta knew, and say
which address answered; ``sync --all`` then reaches it from the address book, and names
it with exit 4 when it cannot. A pairing over IPv6 is logged with brackets and a later
``tunnel connect alpha`` without ``--to`` reaches alpha at that IPv6 address.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.store import open_store
from tests.cliutil import LOOPBACK, Offerer, Proc, certpair_argv, run
from tests.test_two_hosts import OFFERER_ADDRESS, TwoHosts, two_hosts

__all__ = ["two_hosts"]  # the fixture, shared with tests/test_two_hosts.py

CURL = shutil.which("curl")
WAIT = 30.0
# Private ranges that exist only inside this module's namespaces.
MOVES = ("10.231.1", "10.231.2")
ALPHA_V6, BETA_V6 = "fd31:21::1", "fd31:21::2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _veth(side: str) -> str:
    return f"cpv{os.getpid()}{side}"  # as tests/test_two_hosts.py names them


@pytest.fixture
def lan(two_hosts: TwoHosts) -> Iterator[TwoHosts]:
    """beta also on the subnets alpha moves to; alpha back where it was afterwards."""
    for net in MOVES:
        _ip("-n", two_hosts.joiner_ns, "addr", "add", f"{net}.2/24", "dev", _veth("b"))
    try:
        yield two_hosts
    finally:
        for net in MOVES:
            for ns, side, host in ((two_hosts.joiner_ns, "b", 2), (two_hosts.offerer_ns, "a", 1)):
                subprocess.run(["ip", "-n", ns, "addr", "del", f"{net}.{host}/24", "dev",
                                _veth(side)], capture_output=True, check=False)
        subprocess.run(["ip", "-n", two_hosts.offerer_ns, "addr", "add",
                        f"{OFFERER_ADDRESS}/30", "dev", _veth("a")], capture_output=True,
                       check=False)


def _move_alpha(hosts: TwoHosts, old: str, new: str) -> None:
    _ip("-n", hosts.offerer_ns, "addr", "del", old, "dev", _veth("a"))
    _ip("-n", hosts.offerer_ns, "addr", "add", new, "dev", _veth("a"))


def _pair(hosts: TwoHosts, a: Path, b: Path, offerers: list[Proc], listen: str,
          address: str) -> None:
    offerer = Offerer(a, listen=listen, prefix=hosts.on_offerer)
    offerers.append(offerer)
    joined = run(b, "join", "--no-discovery", f"{address}:{offerer.listening['port']}",
                 offerer.code, prefix=hosts.on_joiner)
    assert joined.returncode == 0, joined.stderr
    assert offerer.finish()[0] == 0


def _web(hosts: TwoHosts, root: Path, offerers: list[Proc]) -> int:
    (root / "www").mkdir(exist_ok=True)
    (root / "www" / "index.txt").write_text("from alpha's loopback\n")
    web = Proc([*hosts.on_offerer, sys.executable, "-u", "-m", "http.server", "0",
                "--bind", LOOPBACK, "--directory", str(root / "www")])
    offerers.append(web)
    return int(web.next_line().split(" port ")[1].split()[0])  # "Serving HTTP on … port N"


def _curl(hosts: TwoHosts, port: int) -> str:
    assert CURL is not None
    got = subprocess.run([*hosts.on_joiner, CURL, "-sS", "--fail", "--max-time", str(WAIT),
                          f"http://{LOOPBACK}:{port}/index.txt"],
                         capture_output=True, text=True, timeout=WAIT, check=False)
    assert got.returncode == 0, got.stderr
    return got.stdout


def _json(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_ping_tunnel_and_sync_find_a_peer_by_name_after_its_address_changed(
    lan: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    _pair(lan, a, b, offerers, OFFERER_ADDRESS, OFFERER_ADDRESS)

    # First move: only alpha's serve announcement says where it is now.
    first, second = f"{MOVES[0]}.1", f"{MOVES[1]}.1"
    _move_alpha(lan, f"{OFFERER_ADDRESS}/30", f"{first}/24")
    serve = Proc(certpair_argv(a, "serve", "--json", prefix=lan.on_offerer))
    offerers.append(serve)
    assert serve.next_event()["event"] == "listening"
    assert serve.next_event(WAIT)["event"] == "advertised"
    ping = run(b, "ping", "alpha", "--json", prefix=lan.on_joiner)
    assert ping.returncode == 0, ping.stderr
    reply = _json(ping)[0]
    assert (reply["event"], reply["remote"], reply["address_from"]) == (
        "reply", f"{first}:4491", "dns-sd")
    text = run(b, "ping", "alpha", prefix=lan.on_joiner)  # now from the address book
    assert text.returncode == 0, text.stderr
    assert f"at {first}:4491 (address from contact)" in text.stdout

    # Second move: a new tunnel connect finds alpha's tunnel serve by its announcement.
    serve.kill()
    _move_alpha(lan, f"{first}/24", f"{second}/24")
    web_port = _web(lan, tmp_path, offerers)
    server = Proc(certpair_argv(a, "tunnel", "serve", "--to", f"{LOOPBACK}:{web_port}",
                                "--json", prefix=lan.on_offerer))
    offerers.append(server)
    assert server.next_event()["port"] == 4492
    assert server.next_event(WAIT)["event"] == "advertised"
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--listen", "0", "--json",
                                prefix=lan.on_joiner))
    offerers.append(client)
    listening = client.next_event()
    assert _curl(lan, int(listening["port"])) == "from alpha's loopback\n"
    while (opened := client.next_event())["event"] == "announced":
        pass  # alpha's tunnel, heard by the running tunnel connect
    assert (opened["event"], opened["far"], opened["address_from"]) == (
        "opened", f"{second}:4492", "dns-sd")

    # sync --all reaches alpha's serve (listening on every address) from the book ...
    serve = Proc(certpair_argv(a, "serve", "--json", "--no-advertise", prefix=lan.on_offerer))
    offerers.append(serve)
    assert serve.next_event()["event"] == "listening"
    synced = run(b, "sync", "--all", "--json", prefix=lan.on_joiner)
    assert synced.returncode == 0, synced.stderr
    summary = _json(synced)[-1]
    assert (summary["synced"], summary["failed"]) == (1, 0)
    # ... and when it cannot, it names alpha and why, with exit 4.
    serve.kill()
    failed = run(b, "sync", "--all", "--timeout", "2", prefix=lan.on_joiner)
    assert failed.returncode == 4
    assert "Sync with alpha failed: cannot reach alpha at" in failed.stdout
    assert "Synced 0 of 1 peers" in failed.stdout
    assert "1 of 1 peers not synced: alpha" in failed.stderr


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_a_pairing_over_ipv6_is_logged_with_brackets_and_the_tunnel_finds_it(
    two_hosts: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    for ns, side, address in ((two_hosts.offerer_ns, "a", ALPHA_V6),
                              (two_hosts.joiner_ns, "b", BETA_V6)):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/64", "dev", _veth(side),
                        "nodad"], capture_output=True, check=False)
    _pair(two_hosts, a, b, offerers, ALPHA_V6, f"[{ALPHA_V6}]")
    with open_store(b) as store:
        (pairing,) = [e for e in store.events() if e.outcome == "paired"]
        assert pairing.remote.startswith(f"[{ALPHA_V6}]:")
    with open_store(a) as store:
        (pairing,) = [e for e in store.events() if e.outcome == "paired"]
        assert pairing.remote.startswith(f"[{BETA_V6}]:")

    web_port = _web(two_hosts, tmp_path, offerers)
    server = Proc(certpair_argv(a, "tunnel", "serve", "--to", f"{LOOPBACK}:{web_port}",
                                "--listen", "::", "--no-advertise", "--json",
                                prefix=two_hosts.on_offerer))
    offerers.append(server)
    assert server.next_event()["port"] == 4492
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--listen", "0",
                                "--discovery-timeout", "0", "--json",
                                prefix=two_hosts.on_joiner))
    offerers.append(client)
    listening = client.next_event()
    assert (listening["remote"], listening["address_from"]) == (
        f"[{ALPHA_V6}]:4492", "pairing")
    assert _curl(two_hosts, int(listening["port"])) == "from alpha's loopback\n"
    assert client.next_event()["far"] == f"[{ALPHA_V6}]:4492"
