"""The tunnel's parts without processes: addresses, the loopback rule, the PROXY v2
header byte for byte, where ``tunnel connect`` finds its peer, and the layering."""

from __future__ import annotations

import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from certpair.errors import BadInput
from certpair.identity import create_identity
from certpair.ports import TUNNEL_PORT
from certpair.store import open_store
from certpair.tunnel import Target, parse_listen, parse_target, resolve_far_end, target_check
from certpair.tunnel.dnssd import tunnel_properties
from certpair.tunnel.proxy_v2 import encode_header
from tests.cliutil import LOOPBACK, run
from tests.tunnelutil import Service, Tunnel, echo, make_devices


@pytest.mark.parametrize(("text", "target"), [
    ("127.0.0.1:8080", Target(host="127.0.0.1", port=8080)),
    ("localhost:5432", Target(host="localhost", port=5432)),
    ("[::1]:22", Target(host="::1", port=22)),
    ("unix:/run/app.sock", Target(path="/run/app.sock")),
])
def test_loopback_and_unix_targets_are_accepted(text: str, target: Target) -> None:
    assert parse_target(text, unsafe=False) == target


@pytest.mark.parametrize("text", ["192.0.2.1:80", "[2001:db8::1]:80", "10.0.0.1:5432"])
def test_a_target_off_this_host_needs_the_unsafe_flag(text: str) -> None:
    with pytest.raises(BadInput, match="--unsafe-target"):
        parse_target(text, unsafe=False)
    assert parse_target(text, unsafe=True).port > 0


@pytest.mark.parametrize("text", ["127.0.0.1", "host:0", "host:70000", ":80", "unix:", "[::1"])
def test_malformed_targets_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_target(text, unsafe=True)


@pytest.mark.parametrize(("text", "unsafe", "expected"), [
    ("8080", False, ("127.0.0.1", 8080)),
    ("0", False, ("127.0.0.1", 0)),
    ("127.0.0.2:80", False, ("127.0.0.2", 80)),
    ("[::1]:80", False, ("::1", 80)),
    ("0.0.0.0:80", True, ("0.0.0.0", 80)),
])
def test_listen_addresses(text: str, unsafe: bool, expected: tuple[str, int]) -> None:
    assert parse_listen(text, unsafe=unsafe) == expected


def test_a_wide_listen_address_needs_the_unsafe_flag() -> None:
    with pytest.raises(BadInput, match="--unsafe-listen"):
        parse_listen("0.0.0.0:80", unsafe=False)


# Built by hand from haproxy's proxy-protocol.txt, section 2.2.
_V4_HEADER = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"  # signature
    "21"  # version 2, PROXY
    "11"  # TCP over IPv4
    "006f"  # 111 bytes follow: 12 of addresses, 18 + 74 + 7 of TLVs
    "c0000201" "7f000001" "d431" "bade"  # 192.0.2.1 -> 127.0.0.1, 54321 -> 47838
    "20000f" "07" "00000000" "210007" + b"TLSv1.3".hex()  # PP2_TYPE_SSL, 15 bytes
    + "e00047" + (b"sha256:" + b"ab" * 32).hex()  # fingerprint TLV, 71 bytes of ASCII
    + "e10004" + b"beta".hex())  # peer name TLV


def test_proxy_v2_header_matches_the_specification_byte_for_byte() -> None:
    header = encode_header(("192.0.2.1", 54321), ("127.0.0.1", 47838),
                           fingerprint="sha256:" + "ab" * 32, peer_name="beta")
    assert header == _V4_HEADER


def test_proxy_v2_header_for_ipv6_and_for_a_v4_client_on_a_v6_socket() -> None:
    v6 = encode_header(("2001:db8::1", 1), ("::1", 2), fingerprint="f", peer_name="é")
    assert v6[12:14] == b"\x21\x21" and len(v6) == 16 + 36 + 18 + 4 + 5
    assert v6[16:32] == bytes.fromhex("20010db8" + "00" * 11 + "01")
    assert v6[-2:] == "é".encode()
    mixed = encode_header(("192.0.2.1", 1), ("::", 2), fingerprint="f", peer_name="n")
    assert mixed[13] == 0x21 and mixed[16:32] == bytes.fromhex("00" * 10 + "ffff" + "c0000201")


def test_connect_finds_the_peer_at_the_address_it_was_paired_from(tmp_path: Path) -> None:
    alpha = create_identity(tmp_path / "alpha", "alpha")
    create_identity(tmp_path / "beta", "beta")
    with open_store(tmp_path / "beta") as store:
        peer = store.commit_pairing(name="alpha", cert_der=alpha.cert_der, mode="cpace",
                                    role="joiner", remote="192.0.2.7:4490")
        assert resolve_far_end(store, peer, None) == ("192.0.2.7", TUNNEL_PORT, "pairing")
        assert resolve_far_end(store, peer, "[2001:db8::2]") == (
            "2001:db8::2", TUNNEL_PORT, "--to")
        assert resolve_far_end(store, peer, "h:1") == ("h", 1, "--to")
    tunnel = Tunnel(tmp_path / "beta", "connect", "alpha", "--listen", "0")
    try:
        assert (tunnel.listening["remote"], tunnel.listening["address_from"]) == (
            f"192.0.2.7:{TUNNEL_PORT}", "pairing")
    finally:
        tunnel.kill()


def test_connect_finds_a_peer_without_a_pairing_address_by_dns_sd(
    tmp_path: Path,
) -> None:
    devices = make_devices(tmp_path)
    eps = create_identity(tmp_path / "eps", "eps")
    for who, whom in (("alpha", eps), ("eps", devices.ids["alpha"])):
        with open_store(tmp_path / who) as store:  # no address: paired from nowhere
            store.commit_pairing(name=whom.name, cert_der=whom.cert_der, mode="cpace",
                                 role="joiner", remote="")
    service = Service(echo)
    try:
        server = devices.serve(service.address, advertise=True)
        assert server.next_event()["event"] == "advertised"
        client = Tunnel(tmp_path / "eps", "connect", "alpha", "--listen", "0",
                        "--interface", LOOPBACK, "--discovery-timeout", "10")
        devices.started.append(client)
        assert (client.listening["remote"], client.listening["address_from"]) == (
            f"{LOOPBACK}:{server.port}", "dns-sd")
        with socket.create_connection((LOOPBACK, client.port), timeout=30) as sock:
            sock.sendall(b"found")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(16) == b"found"
    finally:
        service.close()
        for tunnel in devices.started:
            tunnel.kill()


def test_tunnel_advertisement_carries_only_version_name_and_fingerprint() -> None:
    assert tunnel_properties(name="alpha", fingerprint="sha256:" + "0" * 64) == {
        "v": "1", "name": "alpha", "fp": "sha256:" + "0" * 64}


def test_connect_without_a_known_address_asks_for_to(tmp_path: Path) -> None:
    alpha = create_identity(tmp_path / "alpha", "alpha")
    create_identity(tmp_path / "beta", "beta")
    with open_store(tmp_path / "beta") as store:
        peer = store.commit_pairing(name="alpha", cert_der=alpha.cert_der, mode="cpace",
                                    role="joiner", remote="")
        with pytest.raises(BadInput, match="--to"):
            resolve_far_end(store, peer, None)


@pytest.mark.parametrize("args", [["serve", "--to", "127.0.0.1:1"],
                                  ["connect", "alpha", "--listen", "0"]])
def test_tunnel_commands_need_an_identity_and_exit_5_with_one_line(
    tmp_path: Path, args: list[str],
) -> None:
    result = run(tmp_path / "empty", "tunnel", *args)
    assert result.returncode == 5 and result.stderr.count("\n") == 1, result.stderr
    assert "no identity" in result.stderr and "init" in result.stderr


def test_the_tunnel_and_the_pairing_drivers_do_not_import_each_other() -> None:
    probe = ("import sys, certpair.tunnel, certpair.cli.tunnel_cmd; "
             "print(any(m.startswith('certpair.net') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    probe = ("import sys, certpair.net; "
             "print(any(m.startswith('certpair.tunnel') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    assert LOOPBACK == "127.0.0.1"


@pytest.mark.parametrize("listening", [True, False])
def test_the_start_check_reads_a_busy_hosts_socket_table_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listening: bool,
) -> None:
    """`tunnel serve`'s check that its service listens reads the kernel's socket table,
    which holds a row per socket: 100,000 in TIME_WAIT (a host after a load) must not
    take memory by the row. Counted with tracemalloc, not timed."""
    port = 43210
    row = ("   0: 0100007F:{:04X} 0100007F:D431 {} 00000000:00000000 00:00000000 "
           "00000000     0        0 0 1 0000000000000000 100 0 0 10 0\n")
    with (tmp_path / "tcp").open("w") as table:
        table.write("  sl  local_address rem_address   st tx_queue rx_queue ...\n")
        for _ in range(100_000):
            table.write(row.format(port, "06"))  # TIME_WAIT
        if listening:
            table.write(row.format(port, "0A"))  # LISTEN, the last row
    (tmp_path / "tcp6").write_text("  sl  local_address ...\n")
    monkeypatch.setattr(target_check, "_NET", tmp_path)
    tracemalloc.start()
    try:
        problem = target_check.target_problem(Target(host=LOOPBACK, port=port))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem == (None if listening else "connection refused (nothing listens there)")
    assert peak < 1_000_000, peak  # the table is 16 MB
