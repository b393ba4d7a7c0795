"""Running things follow the peer (issue 21): two hosts (the network namespaces of
tests/test_two_hosts.py), real processes.

An address is only a hint: when another device answers at one of alpha's old addresses,
``ping alpha`` and ``sync --all`` pass it over (and say so) and go on to alpha's
announcement; ``sync --all`` looks for announcements by default. ``serve`` and ``tunnel
serve`` keep their announcement right while they run: after this host's address
changes, and after this device's key rotation. A ``tunnel serve`` listening on ``::``
is announced with its IPv6 addresses, link-local ones with their zone, and found there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certpair.announce import TUNNEL_SERVICE_TYPE
from tests.cliutil import LOOPBACK, Proc, cert_fingerprint, certpair_argv, init, run
from tests.test_reach_two_hosts import (
    CURL,
    MOVES,
    _curl,
    _ip,
    _json,
    _move_alpha,
    _pair,
    _veth,
    _web,
    lan,
)
from tests.test_two_hosts import OFFERER_ADDRESS, TwoHosts, two_hosts

__all__ = ["lan", "two_hosts"]  # the fixtures

WAIT = 30.0


def _until(proc: Proc, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first event of ``proc`` that ``match`` accepts (the others are skipped)."""
    while not match(event := proc.next_event(WAIT)):
        pass
    return event


def _serve(hosts: TwoHosts, home: Path, procs: list[Proc], *args: str) -> Proc:
    serve = Proc(certpair_argv(home, "serve", "--json", *args, prefix=hosts.on_offerer))
    procs.append(serve)
    assert serve.next_event()["event"] == "listening"
    return serve


def test_another_device_at_an_old_address_is_passed_over_and_sync_all_browses(
    lan: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    gamma = tmp_path / "gamma"
    init(gamma, "gamma")  # paired with nobody
    _pair(lan, a, b, offerers, OFFERER_ADDRESS, OFFERER_ADDRESS)
    first, second = f"{MOVES[0]}.1", f"{MOVES[1]}.1"
    _ip("-n", lan.offerer_ns, "addr", "add", f"{first}/24", "dev", _veth("a"))

    # gamma's serve now answers where alpha was paired; alpha serves on a new address.
    _serve(lan, gamma, offerers, "--listen", OFFERER_ADDRESS, "--no-advertise")
    serve = _serve(lan, a, offerers, "--listen", first)
    assert serve.next_event(WAIT)["event"] == "advertised"
    ping = run(b, "ping", "alpha", "--json", prefix=lan.on_joiner)
    assert ping.returncode == 0, ping.stderr
    passed, reply = _json(ping)[:2]
    assert passed["event"] == "passed_over"
    assert str(passed["reason"]).startswith(f"{OFFERER_ADDRESS}:4491 is not alpha: it presents "
                                       f"{cert_fingerprint(gamma)}")
    assert (reply["event"], reply["remote"], reply["address_from"]) == (
        "reply", f"{first}:4491", "dns-sd")

    # alpha moves on; sync --all finds it by its announcement (browsed by default), past
    # the dead address it was last reached at and past gamma.
    serve.kill()
    _ip("-n", lan.offerer_ns, "addr", "add", f"{second}/24", "dev", _veth("a"))
    serve = _serve(lan, a, offerers, "--listen", second)
    assert serve.next_event(WAIT)["event"] == "advertised"
    synced = run(b, "sync", "--all", prefix=lan.on_joiner)
    assert synced.returncode == 0, synced.stderr
    assert f"Passed over {OFFERER_ADDRESS}:4491 is not alpha" in synced.stdout
    assert "Synced 1 of 1 peers" in synced.stdout
    text = run(b, "ping", "alpha", prefix=lan.on_joiner)
    assert text.returncode == 0, text.stderr
    assert f"at {second}:4491 (address from contact)" in text.stdout


def test_a_running_serve_announces_its_new_address(
    lan: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc],
) -> None:
    a, b = homes
    _pair(lan, a, b, offerers, OFFERER_ADDRESS, OFFERER_ADDRESS)
    serve = _serve(lan, a, offerers)  # every IPv4 address of alpha's host
    assert serve.next_event(WAIT)["event"] == "advertised"
    assert run(b, "ping", "alpha", prefix=lan.on_joiner).returncode == 0

    moved = f"{MOVES[0]}.1"
    _move_alpha(lan, f"{OFFERER_ADDRESS}/30", f"{moved}/24")
    again = _until(serve, lambda e: e["event"] == "advertised")
    assert again["again"] == f"this host's addresses changed ({moved})"
    synced = run(b, "sync", "--all", "--json", prefix=lan.on_joiner)
    assert synced.returncode == 0, synced.stderr
    summary = _json(synced)[-1]
    assert (summary["synced"], summary["failed"]) == (1, 0)
    ping = run(b, "ping", "alpha", "--json", prefix=lan.on_joiner)
    assert ping.returncode == 0, ping.stderr
    assert _json(ping)[0]["remote"] == f"{moved}:4491"


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_tunnel_serve_on_ipv6_is_announced_with_link_local_zones_and_follows_its_key(
    two_hosts: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    # Link-local addresses of their own, usable at once (no duplicate detection).
    for ns, side, address in ((two_hosts.offerer_ns, "a", "fe80::a1"),
                              (two_hosts.joiner_ns, "b", "fe80::b2")):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/64", "dev", _veth(side),
                        "nodad"], capture_output=True, check=False)
    _pair(two_hosts, a, b, offerers, OFFERER_ADDRESS, OFFERER_ADDRESS)
    web_port = _web(two_hosts, tmp_path, offerers)
    server = Proc(certpair_argv(a, "tunnel", "serve", "--to", f"{LOOPBACK}:{web_port}",
                                "--listen", "::", "--json", prefix=two_hosts.on_offerer))
    offerers.append(server)
    assert server.next_event()["port"] == 4492
    assert server.next_event(WAIT) == {"event": "advertised"}

    # beta knows alpha at its IPv4 address only, where nothing listens now.
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--listen", "0", "--json",
                                prefix=two_hosts.on_joiner))
    offerers.append(client)
    listening = client.next_event()
    assert _curl(two_hosts, int(listening["port"])) == "from alpha's loopback\n"
    opened = _until(client, lambda e: e["event"] == "opened")
    assert opened["address_from"] == "dns-sd"
    assert opened["far"].startswith("[fe80::") and f"%{_veth('b')}]:4492" in opened["far"]

    # alpha rotates its key: its running tunnel serve announces the new fingerprint.
    for step in (("rotate",), ("rotate", "--finish", "--force")):
        done = run(a, *step, prefix=two_hosts.on_offerer)
        assert done.returncode == 0, done.stderr
    new = cert_fingerprint(a)
    again = _until(server, lambda e: e["event"] == "advertised")
    assert again["again"] == f"this device's key changed ({new})"
    look = subprocess.run(
        [*two_hosts.on_joiner, sys.executable, "-c",
         "import json, sys; from certpair.browsing import find_service; "
         "print(json.dumps(find_service(sys.argv[1], {sys.argv[2]}, timeout=20)))",
         TUNNEL_SERVICE_TYPE, new], capture_output=True, text=True, timeout=WAIT, check=False)
    assert look.returncode == 0, look.stderr
    assert [port for _, port in json.loads(look.stdout)][:1] == [4492]


def _tunnel_serve(hosts: TwoHosts, home: Path, procs: list[Proc], web: int,
                  *args: str) -> Proc:
    server = Proc(certpair_argv(home, "tunnel", "serve", "--to", f"{LOOPBACK}:{web}",
                                "--json", *args, prefix=hosts.on_offerer))
    procs.append(server)
    assert server.next_event()["event"] == "listening"
    return server


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_a_running_tunnel_connect_passes_over_another_device_at_the_old_address(
    lan: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    gamma = tmp_path / "gamma"
    init(gamma, "gamma")  # paired with nobody
    _pair(lan, a, b, offerers, OFFERER_ADDRESS, OFFERER_ADDRESS)
    web = _web(lan, tmp_path, offerers)
    server = _tunnel_serve(lan, a, offerers, web, "--listen", OFFERER_ADDRESS,
                           "--no-advertise")
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--listen", "0", "--json",
                                "--discovery-timeout", "0", prefix=lan.on_joiner))
    offerers.append(client)
    port = int(client.next_event()["port"])
    assert _curl(lan, port) == "from alpha's loopback\n"
    assert _until(client, lambda e: e["event"] == "opened")["far"] == (
        f"{OFFERER_ADDRESS}:4492")

    # alpha moves on (beta hears of it by pinging its serve there); gamma's tunnel now
    # answers where alpha's tunnel was reached.
    server.kill()
    moved = f"{MOVES[0]}.1"
    _ip("-n", lan.offerer_ns, "addr", "add", f"{moved}/24", "dev", _veth("a"))
    _tunnel_serve(lan, gamma, offerers, web, "--listen", OFFERER_ADDRESS, "--no-advertise")
    _tunnel_serve(lan, a, offerers, web, "--listen", moved, "--no-advertise")
    _serve(lan, a, offerers, "--listen", moved, "--no-advertise")
    assert run(b, "ping", moved, prefix=lan.on_joiner).returncode == 0

    assert _curl(lan, port) == "from alpha's loopback\n"  # the same running tunnel
    passed = _until(client, lambda e: e["event"] in {"passed_over", "failed"})
    assert passed["event"] == "passed_over", passed
    assert str(passed["reason"]).startswith(f"{OFFERER_ADDRESS}:4492 is not alpha: it "
                                            f"presents {cert_fingerprint(gamma)}")
    opened = _until(client, lambda e: e["event"] == "opened")
    assert (opened["far"], opened["address_from"]) == (f"{moved}:4492", "contact")


@pytest.mark.skipif(CURL is None, reason="needs curl (Debian: apt install curl)")
def test_a_running_tunnel_connect_follows_the_peer_to_its_new_address(
    lan: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], tmp_path: Path,
) -> None:
    a, b = homes
    _pair(lan, a, b, offerers, OFFERER_ADDRESS, OFFERER_ADDRESS)
    web = _web(lan, tmp_path, offerers)
    server = _tunnel_serve(lan, a, offerers, web)  # announced on every address
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--listen", "0", "--json",
                                prefix=lan.on_joiner))
    offerers.append(client)
    port = int(client.next_event()["port"])
    assert _curl(lan, port) == "from alpha's loopback\n"
    assert _until(client, lambda e: e["event"] == "opened")["far"] == (
        f"{OFFERER_ADDRESS}:4492")

    # alpha moves and restarts its tunnel serve; the running tunnel connect hears the
    # announcement, and its next connection goes there at once: no failed one first.
    server.kill()
    moved = f"{MOVES[1]}.1"
    _move_alpha(lan, f"{OFFERER_ADDRESS}/30", f"{moved}/24")
    _tunnel_serve(lan, a, offerers, web)
    heard = _until(client, lambda e: e["event"] == "announced"
                   and f"{moved}:4492" in e["addresses"])
    assert heard["peer"]["name"] == "alpha"
    assert _curl(lan, port) == "from alpha's loopback\n"
    opened = _until(client, lambda e: e["event"] in {"opened", "failed"})
    assert (opened["event"], opened["far"], opened["address_from"]) == (
        "opened", f"{moved}:4492", "dns-sd")
