"""Three hosts: devices A and B each reach a relay host R, but not each other.

Three network namespaces joined by two veth pairs (A-R and B-R). R does not forward
between them (a new namespace has forwarding off), so A and B have no route to each
other: the first thing checked. The real transit relay runs in R on an address of
its own (10.232.0.1, on R's loopback, routed to from A and B), and the devices pair
through it with the real ``certpair`` command. Needs root and iproute2; skipped
otherwise, with the reason. Everything is deleted at the end whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cliutil import Offerer, Proc, cert_fingerprint, peers, run
from tests.relayutil import RealRelay

RELAY_ADDRESS = "10.232.0.1"
A_ADDRESS, A_RELAY_SIDE = "10.232.1.1", "10.232.1.2"
B_ADDRESS, B_RELAY_SIDE = "10.232.2.1", "10.232.2.2"


@dataclass
class ThreeHosts:
    a: str
    b: str
    r: str
    relay: RealRelay  # replaced when a test restarts it

    @staticmethod
    def on(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    @property
    def relay_arg(self) -> str:
        return f"tcp:{RELAY_ADDRESS}:{self.relay.port}"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("reached")
except OSError as exc:
    print(f"unreachable: {exc}")
"""


def _reach(ns: str, host: str, port: int) -> str:
    return subprocess.run([*ThreeHosts.on(ns), sys.executable, "-c", _CONNECT, host, str(port)],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def _make(pid: int) -> tuple[ThreeHosts, list[str]]:
    names = {k: f"certpair-{pid}-{k}" for k in "abr"}
    created: list[str] = []
    for ns in names.values():
        _ip("netns", "add", ns)
        created.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", names["r"], "addr", "add", f"{RELAY_ADDRESS}/32", "dev", "lo")
    for k, address, relay_side in (("a", A_ADDRESS, A_RELAY_SIDE),
                                   ("b", B_ADDRESS, B_RELAY_SIDE)):
        dev, peer = f"cpr{pid}{k}", f"cpr{pid}{k}r"  # interface names: 15 bytes at most
        _ip("link", "add", dev, "type", "veth", "peer", "name", peer)
        _ip("link", "set", dev, "netns", names[k])
        _ip("link", "set", peer, "netns", names["r"])
        _ip("-n", names[k], "addr", "add", f"{address}/30", "dev", dev)
        _ip("-n", names["r"], "addr", "add", f"{relay_side}/30", "dev", peer)
        _ip("-n", names[k], "link", "set", dev, "up")
        _ip("-n", names["r"], "link", "set", peer, "up")
        _ip("-n", names[k], "route", "add", f"{RELAY_ADDRESS}/32", "via", relay_side)
    relay = RealRelay(host="0.0.0.0", prefix=ThreeHosts.on(names["r"]))
    return ThreeHosts(a=names["a"], b=names["b"], r=names["r"], relay=relay), created


@pytest.fixture(scope="module")
def three_hosts() -> Iterator[ThreeHosts]:
    if os.geteuid() != 0:
        pytest.skip("the relay hosts test creates network namespaces and needs root")
    if shutil.which("ip") is None:
        pytest.skip("the relay hosts test needs iproute2's `ip` command")
    pid = os.getpid()
    try:
        hosts, created = _make(pid)
    except RuntimeError as exc:
        for k in "abr":
            subprocess.run(["ip", "netns", "del", f"certpair-{pid}-{k}"], capture_output=True,
                           check=False)
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        assert_separated(hosts)  # first, for every module that uses these hosts
        yield hosts
    finally:
        hosts.relay.kill()
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def assert_separated(hosts: ThreeHosts) -> None:
    """A and B each reach the relay, and not each other (B really listens: R reaches it)."""
    listener = Proc([*ThreeHosts.on(hosts.b), sys.executable, "-u", "-c",
                     "import socket; s = socket.create_server(('0.0.0.0', 0)); "
                     "print(s.getsockname()[1], flush=True); s.accept()"])
    try:
        port = int(listener.next_line())
        assert _reach(hosts.r, B_ADDRESS, port) == "reached"  # B listens, really
        assert _reach(hosts.a, B_ADDRESS, port).startswith("unreachable")
    finally:
        listener.kill()
    for ns in (hosts.a, hosts.b):
        assert _reach(ns, RELAY_ADDRESS, hosts.relay.port) == "reached"


def test_each_device_reaches_the_relay_but_not_the_other_device(three_hosts: ThreeHosts) -> None:
    assert_separated(three_hosts)


def _assert_paired(a: Path, b: Path) -> None:
    assert [(p["name"], p["fingerprint"]) for p in peers(a)] == [("beta", cert_fingerprint(b))]
    assert [(p["name"], p["fingerprint"]) for p in peers(b)] == [("alpha", cert_fingerprint(a))]


@pytest.mark.parametrize("mode", ["cpace", "hmac"])
def test_two_devices_without_a_route_pair_through_the_relay_by_code(
    three_hosts: ThreeHosts, homes: tuple[Path, Path], offerers: list[Proc], mode: str,
) -> None:
    a, b = homes
    offerer = Offerer(a, "--mode", mode, "--relay", three_hosts.relay_arg, listen=None,
                      advertise=False, prefix=ThreeHosts.on(three_hosts.a))
    offerers.append(offerer)
    listening = offerer.listening
    assert (listening["relay"], listening["mode"]) == (three_hosts.relay_arg, mode)
    assert listening["code"].startswith(f"{listening['nameplate']}+")
    assert offerer.next_event() == {"event": "relay", "relay": three_hosts.relay_arg,
                                    "status": "waiting"}
    joined = run(b, "join", "--relay", three_hosts.relay_arg, "--json", offerer.code,
                 prefix=ThreeHosts.on(three_hosts.b))
    assert joined.returncode == 0, joined.stderr
    lines = [json.loads(line) for line in joined.stdout.splitlines()]
    assert [(e["event"], e.get("path")) for e in lines] == [("connected", "relay"),
                                                            ("paired", "relay")]
    code, rest, err = offerer.finish()
    assert code == 0, err
    assert (rest[-1]["event"], rest[-1]["path"]) == ("paired", "relay")
    _assert_paired(a, b)


def test_the_printed_join_line_works_from_the_other_host_falling_back_to_the_relay(
    three_hosts: ThreeHosts, homes: tuple[Path, Path], offerers: list[Proc],
) -> None:
    """Off a terminal, `pair --relay` prints the line to type on the other device: the
    relay, this host's address and the code. From B the address is unreachable, so the
    join goes through the relay, and says so."""
    a, b = homes
    offerer = Proc([*ThreeHosts.on(three_hosts.a), sys.executable, "-m", "certpair", "--home",
                    str(a), "pair", "--relay", three_hosts.relay_arg, "--no-advertise"])
    offerers.append(offerer)
    while not (line := offerer.next_line()).startswith("On the other device: certpair join "):
        pass
    words = line.split("certpair join ", 1)[1].split()
    assert words[:3] == ["--relay", three_hosts.relay_arg, A_ADDRESS]
    joined = run(b, "join", *words, prefix=ThreeHosts.on(three_hosts.b))
    assert joined.returncode == 0, joined.stderr
    assert f"Connected through the relay {three_hosts.relay_arg}." in joined.stderr
    assert "(through the relay)" in joined.stdout
    assert offerer.proc.wait(30) == 0
    _assert_paired(a, b)
