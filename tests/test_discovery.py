"""Discovery and advertisement, with real processes on loopback.

Every mDNS socket here is bound to 127.0.0.1 (``--listen 127.0.0.1`` on the offerer,
``--interface 127.0.0.1`` on the joiner and in-process browsers), so no packet leaves
this host. Tests that need to be alone on the link ("no offerer", "two offerers") run
their processes in a private network namespace holding only ``lo`` when root can make
one, so that another test run on this machine cannot answer them; elsewhere they use
the host's loopback. ``test_two_hosts.py`` runs the same flows between two namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certpair.codes import Mode, parse_secret
from certpair.discovery import (
    SERVICE_TYPE,
    AmbiguousOfferers,
    DiscoveredOfferer,
    NoOfferer,
    advertisement_properties,
    choose_offerer,
)
from certpair.errors import BadInput, Expired
from tests.cliutil import (
    LOOPBACK,
    Offerer,
    Proc,
    cert_fingerprint,
    events,
    init,
    peers,
    run,
)

MDNS_GROUP = "224.0.0.251"


@pytest.fixture(scope="module")
def link() -> Iterator[list[str]]:
    """Command prefix that runs a process on a loopback no other test run shares."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield []
        return
    ns = f"certpair-{os.getpid()}-lo"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, check=False)
    if made.returncode:
        yield []
        return
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# ---------------------------------------------------------------- choosing, pure

def _found(name: str, mode: Mode = Mode.CPACE, host: str = "10.0.0.1") -> DiscoveredOfferer:
    return DiscoveredOfferer(instance=name, name=name, addresses=(host,), port=4490, mode=mode,
                             version="1", fingerprint=None)


def test_choose_offerer_takes_the_only_one_in_the_secrets_mode() -> None:
    chosen = choose_offerer([_found("a", Mode.HMAC), _found("b")], mode=Mode.CPACE,
                            peer_name=None, waited=1)
    assert chosen.name == "b"


def test_choose_offerer_refuses_to_pick_among_several_and_reports_them() -> None:
    with pytest.raises(AmbiguousOfferers) as info:
        choose_offerer([_found("a"), _found("b")], mode=Mode.CPACE, peer_name=None, waited=1)
    assert isinstance(info.value, BadInput)  # exit 2
    assert [o.name for o in info.value.candidates] == ["a", "b"]
    assert "--peer-name" in str(info.value)


def test_choose_offerer_with_a_name_shared_by_two_still_refuses() -> None:
    with pytest.raises(AmbiguousOfferers, match="impostor"):
        choose_offerer([_found("a", host="10.0.0.1"), _found("a", host="10.0.0.2"),
                        _found("b")], mode=Mode.CPACE, peer_name="a", waited=1)
    assert choose_offerer([_found("a"), _found("b")], mode=Mode.CPACE, peer_name="b",
                          waited=1).name == "b"


def test_choose_offerer_with_none_matching_is_a_timeout() -> None:
    with pytest.raises(NoOfferer) as info:
        choose_offerer([_found("a", Mode.HMAC)], mode=Mode.CPACE, peer_name=None, waited=2)
    assert isinstance(info.value, Expired)  # exit 3
    assert "within 2 s" in str(info.value)


def test_advertised_properties_are_exactly_version_mode_name_and_fingerprint() -> None:
    fp = "sha256:" + "ab" * 32
    assert advertisement_properties(name="alpha", mode=Mode.HMAC, fingerprint=fp) == {
        "v": "1", "mode": "hmac", "name": "alpha", "fp": fp}


def test_cli_start_up_imports_neither_zeroconf_nor_segno() -> None:
    probe = ("import sys, certpair.cli.main; "
             "print(sorted(m for m in ('zeroconf', 'segno', 'ifaddr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- discovery, processes

@pytest.mark.parametrize("mode", ["cpace", "hmac"])
def test_join_with_only_the_code_finds_the_offerer_and_pairs(
    homes: tuple[Path, Path], offerers: list[Proc], link: list[str], mode: str
) -> None:
    a, b = homes
    offerer = Offerer(a, "--mode", mode, prefix=link)
    offerers.append(offerer)
    joined = run(b, "join", offerer.code, "--interface", LOOPBACK, "--json", prefix=link)
    code, _, _ = offerer.finish()
    assert joined.returncode == 0, joined.stderr
    lines = [json.loads(line) for line in joined.stdout.splitlines()]
    assert lines[0]["event"] == "found"
    assert (lines[0]["offerer"]["host"], lines[0]["offerer"]["port"]) == (
        LOOPBACK, offerer.listening["port"])
    assert lines[-1]["peer"]["fingerprint"] == cert_fingerprint(a)
    assert code == 0
    assert [p["fingerprint"] for p in peers(a)] == [cert_fingerprint(b)]
    assert [p["fingerprint"] for p in peers(b)] == [cert_fingerprint(a)]


def test_join_with_no_offerer_exits_3_with_one_clear_line(homes: tuple[Path, Path],
                                                         link: list[str]) -> None:
    _, b = homes
    started = time.monotonic()
    result = run(b, "join", "1234-5678-6", "--interface", LOOPBACK, "--discovery-timeout", "1",
                 prefix=link)
    assert result.returncode == 3
    assert time.monotonic() - started >= 1
    assert result.stderr.startswith("Error: no device offering cpace pairing was found")
    assert "join HOST[:PORT] SECRET" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert events(b) == []


def test_join_never_tries_a_code_when_two_offerers_answer(
    tmp_path: Path, homes: tuple[Path, Path], offerers: list[Proc], link: list[str]
) -> None:
    a, b = homes
    c = tmp_path / "c"
    init(c, "gamma")
    # --once: a single failed proof would end either offerer.
    alpha, gamma = Offerer(a, "--once", prefix=link), Offerer(c, "--once", prefix=link)
    offerers += [alpha, gamma]
    text = run(b, "join", alpha.code, "--interface", LOOPBACK, prefix=link)
    as_json = run(b, "join", alpha.code, "--interface", LOOPBACK, "--json", prefix=link)

    assert text.returncode == 2
    assert "Several devices are offering pairing" in text.stderr
    assert "alpha" in text.stderr and "gamma" in text.stderr
    assert text.stderr.strip().splitlines()[-1].startswith("Error: 2 devices are offering")
    assert as_json.returncode == 2
    listed = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["event"] for e in listed] == ["offerers", "failed"]
    assert sorted(o["name"] for o in listed[0]["offerers"]) == ["alpha", "gamma"]
    # Nothing was tried: no audit rows anywhere, both offers still open.
    assert events(b) == [] and events(a) == [] and events(c) == []
    assert alpha.proc.poll() is None and gamma.proc.poll() is None

    chosen = run(b, "join", alpha.code, "--interface", LOOPBACK, "--peer-name", "alpha",
                 prefix=link)
    assert chosen.returncode == 0, chosen.stderr
    assert alpha.finish()[0] == 0
    assert [p["name"] for p in peers(b)] == ["alpha"]
    assert gamma.proc.poll() is None and events(c) == []


@pytest.mark.parametrize(
    "args",
    [
        ["join", "1234-5678-6", "--no-discovery"],
        ["join", "127.0.0.1", "1234-5678-6", "--peer-name", "alpha"],
        ["join", "1234-5678-6", "--interface", "not-an-address"],
        ["join", "1234-5678-6", "--interface", "192.0.2.254"],
    ],
)
def test_discovery_options_that_cannot_apply_exit_2_at_once(
    homes: tuple[Path, Path], args: list[str]
) -> None:
    _, b = homes
    result = run(b, *args, timeout=20)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


def test_discover_lists_the_offerer_with_address_mode_and_fingerprint(
    homes: tuple[Path, Path], offerers: list[Proc], link: list[str]
) -> None:
    a, b = homes
    offerer = Offerer(a, "--mode", "hmac", prefix=link)
    offerers.append(offerer)
    advertised = offerer.next_event()
    assert advertised["event"] == "advertised"
    # announced only where it listens, and it says where
    assert advertised["where"] == f"{LOOPBACK} only: this machine, not the local network"
    result = run(b, "discover", "--json", "--interface", LOOPBACK, "--timeout", "2",
                 prefix=link)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{
        "name": "alpha", "instance": "alpha", "host": LOOPBACK,
        "port": offerer.listening["port"], "addresses": [LOOPBACK], "mode": "hmac",
        "version": "1", "fingerprint": cert_fingerprint(a)}]


def test_discover_with_nobody_offering_says_so_and_exits_0(homes: tuple[Path, Path],
                                                          link: list[str]) -> None:
    _, b = homes
    result = run(b, "discover", "--interface", LOOPBACK, "--timeout", "1", prefix=link)
    assert (result.returncode, result.stdout) == (
        0, "No device is offering pairing on the local network.\n")


# ---------------------------------------------------------------- what is published

class MulticastCapture:
    """Every multicast mDNS packet on loopback, read passively (this socket sends nothing).

    Bound to the group address, so it never takes a unicast reply meant for a browser.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind((MDNS_GROUP, 5353))
        mreq = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(LOOPBACK)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.sock.settimeout(0.1)
        self.packets: list[bytes] = []

    def read_until(self, needle: bytes, timeout: float = 10) -> bytes:
        """Read packets until one contains ``needle`` (the advert itself), then drain."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(needle in p for p in self.packets):
            with contextlib.suppress(TimeoutError):
                self.packets.append(self.sock.recv(9000))
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.packets.append(self.sock.recv(9000))
        return b"\n".join(self.packets)

    def close(self) -> None:
        self.sock.close()


async def _resolve_on_loopback(fingerprint: str, timeout: float = 15) -> Any:
    """The ServiceInfo of the advertisement carrying ``fingerprint`` (others are ignored:
    another suite's offerer may be pairing on this host's loopback too)."""
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    azc = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    names: asyncio.Queue[str] = asyncio.Queue()

    def on_change(*, zeroconf: Any, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            names.put_nowait(name)

    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        async with asyncio.timeout(timeout):
            while True:
                info = AsyncServiceInfo(SERVICE_TYPE, await names.get())
                if (await info.async_request(azc.zeroconf, 3000)
                        and info.properties.get(b"fp") == fingerprint.encode()):
                    return info
    finally:
        await browser.async_cancel()
        await azc.async_close()


def _derived(secret_text: str) -> list[bytes]:
    """The secret in every form we can think of, and common hashes of each."""
    secret = parse_secret(secret_text)
    forms = {secret.display, secret.display.replace("-", ""), secret.value.hex()}
    if secret.mode is Mode.CPACE:
        forms.add(secret.value.decode())
    out = {f.encode() for f in forms} | {f.lower().encode() for f in forms}
    if secret.mode is Mode.HMAC:
        out.add(secret.value)
    for form in list(out):
        for algorithm in ("md5", "sha1", "sha256", "sha512", "blake2b"):
            digest = hashlib.new(algorithm, form)
            out |= {digest.digest(), digest.hexdigest().encode(), digest.hexdigest()[:16].encode()}
    return sorted(out)


@pytest.mark.parametrize("mode", ["cpace", "hmac"])
async def test_advertisement_carries_nothing_derived_from_the_secret(
    homes: tuple[Path, Path], offerers: list[Proc], mode: str
) -> None:
    a, _ = homes
    fp = cert_fingerprint(a)
    capture = MulticastCapture()
    try:
        offerer = await asyncio.to_thread(Offerer, a, "--mode", mode)
        offerers.append(offerer)
        info = await _resolve_on_loopback(fp)
        wire = await asyncio.to_thread(capture.read_until, fp.encode())
    finally:
        capture.close()
    assert info.properties == {b"v": b"1", b"mode": mode.encode(), b"name": b"alpha",
                               b"fp": fp.encode()}
    assert re.fullmatch(r"alpha(-[0-9]+)?\._certpair\._tcp\.local\.", info.name)
    assert info.port == offerer.listening["port"]
    assert info.parsed_addresses() == [LOOPBACK]
    assert fp.encode() in wire and b"_certpair" in wire  # the capture saw the advert
    published = [info.name.encode(), info.server.encode(), info.text, wire]
    for token in _derived(offerer.code):
        assert not any(token in blob for blob in published), token


@pytest.mark.parametrize("ending", ["paired", "SIGTERM", "SIGINT"])
async def test_advertisement_is_withdrawn_when_pairing_ends(
    homes: tuple[Path, Path], offerers: list[Proc], ending: str
) -> None:
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    a, b = homes
    changes: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

    def on_change(*, zeroconf: Any, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        changes.put_nowait((name, state_change))

    azc = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        offerer = await asyncio.to_thread(Offerer, a)
        offerers.append(offerer)
        async with asyncio.timeout(15):
            while True:
                name, change = await changes.get()
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if (change is ServiceStateChange.Added
                        and await info.async_request(azc.zeroconf, 3000)
                        and info.properties.get(b"fp") == cert_fingerprint(a).encode()):
                    break
        if ending == "paired":
            joined = await asyncio.to_thread(run, b, "join", f"{LOOPBACK}:"
                                             f"{offerer.listening['port']}", offerer.code)
            assert joined.returncode == 0, joined.stderr
        else:
            offerer.proc.send_signal(getattr(signal, ending))
        status = (await asyncio.to_thread(offerer.finish))[0]
        assert status == {"paired": 0, "SIGTERM": 128 + 15, "SIGINT": 130}[ending]
        # The records live 120 s: seeing them go within seconds means a goodbye was sent.
        async with asyncio.timeout(8):
            while (await changes.get()) != (name, ServiceStateChange.Removed):
                pass
    finally:
        await browser.async_cancel()
        await azc.async_close()


def test_no_advertise_publishes_nothing(homes: tuple[Path, Path], offerers: list[Proc],
                                     link: list[str]) -> None:
    a, b = homes
    offerer = Offerer(a, advertise=False, prefix=link)
    offerers.append(offerer)
    result = run(b, "discover", "--json", "--interface", LOOPBACK, "--timeout", "2.5",
                 prefix=link)
    assert (result.returncode, result.stdout) == (0, "")
    assert offerer.lines.empty()
