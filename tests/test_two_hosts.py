"""Two hosts: an offerer and a joiner in two network namespaces joined by a veth pair.

Needs root and iproute2 (``ip``); skipped otherwise, with the reason. The namespaces
have no other interface than ``lo`` and their end of the veth, so every packet —
TCP, TLS and multicast DNS alike — stays between them. They are deleted at the end
whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certpair.uri import parse_uri
from tests.cliutil import Offerer, Proc, cert_fingerprint, peers, run

# A private /30 that only exists inside the two namespaces this file creates.
OFFERER_ADDRESS = "10.231.0.1"
JOINER_ADDRESS = "10.231.0.2"


@dataclass(frozen=True)
class TwoHosts:
    offerer_ns: str
    joiner_ns: str

    @property
    def on_offerer(self) -> list[str]:
        return ["ip", "netns", "exec", self.offerer_ns]

    @property
    def on_joiner(self) -> list[str]:
        return ["ip", "netns", "exec", self.joiner_ns]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[TwoHosts]:
    if os.geteuid() != 0:
        pytest.skip("the two-host test creates network namespaces and needs root")
    if shutil.which("ip") is None:
        pytest.skip("the two-host test needs iproute2's `ip` command")
    pid = os.getpid()
    hosts = TwoHosts(offerer_ns=f"certpair-{pid}-a", joiner_ns=f"certpair-{pid}-b")
    veth_a, veth_b = f"cpv{pid}a", f"cpv{pid}b"  # interface names: 15 bytes at most
    created: list[str] = []
    try:
        for ns in (hosts.offerer_ns, hosts.joiner_ns):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", hosts.offerer_ns)
        _ip("link", "set", veth_b, "netns", hosts.joiner_ns)
        for ns, dev, address in ((hosts.offerer_ns, veth_a, OFFERER_ADDRESS),
                                 (hosts.joiner_ns, veth_b, JOINER_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "multicast", "on", "up")
    except RuntimeError as exc:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        # A veth left in the root namespace (moved nowhere yet) goes with its peer.
        subprocess.run(["ip", "link", "del", veth_a], capture_output=True, check=False)
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        yield hosts
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _assert_paired(a: Path, b: Path) -> None:
    assert [(p["name"], p["fingerprint"]) for p in peers(a)] == [("beta", cert_fingerprint(b))]
    assert [(p["name"], p["fingerprint"]) for p in peers(b)] == [("alpha", cert_fingerprint(a))]


def test_pairs_across_two_hosts_by_explicit_address(
    two_hosts: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc]
) -> None:
    a, b = homes
    offerer = Offerer(a, listen=OFFERER_ADDRESS, prefix=two_hosts.on_offerer)
    offerers.append(offerer)
    assert offerer.listening["host"] == OFFERER_ADDRESS
    joined = run(b, "join", "--no-discovery", f"{OFFERER_ADDRESS}:{offerer.listening['port']}",
                 offerer.code, prefix=two_hosts.on_joiner)
    assert joined.returncode == 0, joined.stderr
    code, rest, err = offerer.finish()
    assert code == 0, err
    assert rest[-1]["event"] == "paired"
    _assert_paired(a, b)


@pytest.mark.parametrize("mode", ["cpace", "hmac"])
def test_pairs_across_two_hosts_by_discovery_with_only_the_secret(
    two_hosts: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc], mode: str
) -> None:
    a, b = homes
    # The default listen address (0.0.0.0): advertised on every interface of its host,
    # which here means lo and the veth only.
    offerer = Offerer(a, "--mode", mode, listen=None, prefix=two_hosts.on_offerer)
    offerers.append(offerer)
    joined = run(b, "join", offerer.code, "--json", prefix=two_hosts.on_joiner)
    assert joined.returncode == 0, joined.stderr
    lines = [json.loads(line) for line in joined.stdout.splitlines()]
    assert [e["event"] for e in lines] == ["found", "paired"]
    found = lines[0]["offerer"]
    assert (found["name"], found["host"], found["port"], found["fingerprint"]) == (
        "alpha", OFFERER_ADDRESS, offerer.listening["port"], cert_fingerprint(a))
    assert offerer.finish()[0] == 0
    _assert_paired(a, b)


def test_pairs_across_two_hosts_by_scanned_uri(
    two_hosts: TwoHosts, homes: tuple[Path, Path], offerers: list[Proc]
) -> None:
    a, b = homes
    offerer = Offerer(a, "--qr", advertise=False, listen=None, prefix=two_hosts.on_offerer)
    offerers.append(offerer)
    uri = parse_uri(offerer.listening["uri"])
    # Listening on 0.0.0.0, the URI names the host's one non-loopback address.
    assert (uri.host, uri.port, uri.fingerprint) == (
        OFFERER_ADDRESS, offerer.listening["port"], cert_fingerprint(a))
    joined = run(b, "join", offerer.listening["uri"], prefix=two_hosts.on_joiner)
    assert joined.returncode == 0, joined.stderr
    assert offerer.finish()[0] == 0
    _assert_paired(a, b)


def test_discovery_across_two_hosts_times_out_with_exit_3_when_nobody_offers(
    two_hosts: TwoHosts, homes: tuple[Path, Path]
) -> None:
    _, b = homes
    result = run(b, "join", "1234-5678-6", "--discovery-timeout", "1",
                 prefix=two_hosts.on_joiner)
    assert result.returncode == 3
    assert result.stderr.startswith("Error: no device offering cpace pairing was found")
