"""Trusted connections through the relay between two hosts that cannot reach each
other (the three namespaces of tests/test_relay_hosts.py): ``ping`` to ``serve
--relay``, ``sync --relay PEER`` and ``sync --all`` with CERTPAIR_RELAY (a rotation
told through it), and a tunnel transfer both ways with a half-close in the middle, checked
by SHA-256; then the relay dies mid-transfer (the transfer ends short and is said to
have ended, never completed silently), and once it is back the server's waiting
connections return by themselves and the next transfer goes through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import sys
from pathlib import Path

from tests.cliutil import LOOPBACK, Offerer, Proc, certpair_argv, run
from tests.relayutil import RealRelay
from tests.test_relay_hosts import RELAY_ADDRESS, ThreeHosts, three_hosts

__all__ = ["three_hosts"]  # the fixture, shared with tests/test_relay_hosts.py

SIZE = 64 * 1024 * 1024

# The service behind the tunnel: reads until the client half-closes, answers the
# SHA-256 of what it read, then sends SIZE bytes of a known stream and closes.
_TARGET = f"""
import hashlib, socket, sys
server = socket.create_server(("{LOOPBACK}", 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        digest = hashlib.sha256()
        while data := conn.recv(1 << 20):
            digest.update(data)
        conn.sendall(digest.hexdigest().encode())
        block = hashlib.sha256(b"down").digest() * 32768
        try:
            for _ in range({SIZE} // len(block)):
                conn.sendall(block)
        except OSError:
            pass
"""
_BLOCK_DOWN = hashlib.sha256(b"down").digest() * 32768


def _pair(hosts: ThreeHosts, a: Path, b: Path, offerers: list[Proc]) -> None:
    offerer = Offerer(a, "--relay", hosts.relay_arg, listen=None, advertise=False,
                      prefix=ThreeHosts.on(hosts.a))
    offerers.append(offerer)
    joined = run(b, "join", "--relay", hosts.relay_arg, offerer.code,
                 prefix=ThreeHosts.on(hosts.b))
    assert joined.returncode == 0, joined.stderr
    assert offerer.finish()[0] == 0


_CLIENT = f"""
import hashlib, socket, sys
up = hashlib.sha256(b"up").digest() * 32768
sock = socket.create_connection(("{LOOPBACK}", int(sys.argv[1])), timeout=60)
sent = hashlib.sha256()
for _ in range(int(sys.argv[2]) // len(up)):
    sock.sendall(up)
    sent.update(up)
sock.shutdown(socket.SHUT_WR)
answer = b""
while len(answer) < 64 and (data := sock.recv(64 - len(answer))):
    answer += data
print(answer.decode() == sent.hexdigest(), flush=True)
got, size, end = hashlib.sha256(), 0, "eof"
try:
    while data := sock.recv(1 << 20):
        got.update(data)
        size += len(data)
        if size >= {4 * 1024 * 1024} and len(sys.argv) > 3:
            print("halfway", flush=True)
            sys.argv.pop()
except ConnectionResetError:
    end = "reset"
print(size, got.hexdigest(), end, flush=True)
"""


def _connection(serve: Proc) -> dict[str, object]:
    """serve's next connection line (announcements and notes in between skipped)."""
    while (event := serve.next_event())["event"] != "connection":
        pass
    return event


def _transfer(hosts: ThreeHosts, port: int, size: int, *, halfway: bool = False) -> Proc:
    return Proc([*ThreeHosts.on(hosts.b), sys.executable, "-u", "-c", _CLIENT, str(port),
                 str(size), *(["halfway"] if halfway else [])])


def test_ping_and_a_tunnel_transfer_through_the_relay_then_the_relay_dies_and_returns(
    three_hosts: ThreeHosts, homes: tuple[Path, Path], offerers: list[Proc],
) -> None:
    hosts = three_hosts
    a, b = homes
    _pair(hosts, a, b, offerers)

    serve = Proc(certpair_argv(a, "serve", "--relay", hosts.relay_arg, "--json",
                               prefix=ThreeHosts.on(hosts.a)))
    offerers.append(serve)
    assert serve.next_event()["event"] == "listening"
    while (event := serve.next_event())["event"] != "relay":
        pass
    assert event == {"event": "relay", "relay": hosts.relay_arg, "status": "waiting"}
    pinged = run(b, "ping", "--relay", hosts.relay_arg, "alpha", "--json",
                 prefix=ThreeHosts.on(hosts.b))
    assert pinged.returncode == 0, pinged.stderr
    reply = json.loads(pinged.stdout.splitlines()[0])
    assert (reply["event"], reply["remote"], reply["peer"]["name"]) == (
        "reply", f"relay {hosts.relay_arg}", "alpha")
    assert _connection(serve)["outcome"] == "accepted"  # mutual TLS let beta in

    # sync goes the same way: PEER with --relay, and --all with the setting
    # (CERTPAIR_RELAY) every command reads. beta's rotation reaches alpha through it.
    rotated = run(b, "rotate", "--json", prefix=ThreeHosts.on(hosts.b))
    assert rotated.returncode == 0, rotated.stderr
    successor = json.loads(rotated.stdout.splitlines()[0])["fingerprint"]
    synced = run(b, "sync", "--relay", hosts.relay_arg, "alpha", "--json",
                 prefix=ThreeHosts.on(hosts.b))
    assert synced.returncode == 0, synced.stderr
    told = json.loads(synced.stdout.splitlines()[0])
    assert (told["remote"], told["address_from"], told["told"], told["new_fingerprint"]) == (
        f"relay {hosts.relay_arg}", "relay", "accepted", successor)
    every = run(b, "sync", "--all", "--json",
                prefix=[*ThreeHosts.on(hosts.b), "env", f"CERTPAIR_RELAY={hosts.relay_arg}"])
    assert every.returncode == 0, every.stderr
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert (lines[0]["remote"], lines[0]["outcome"]) == (f"relay {hosts.relay_arg}", "done")
    assert (lines[-1]["synced"], lines[-1]["failed"]) == (1, 0)
    # The address book says "via relay R", never that the relay is alpha's address;
    # without a relay configured, nothing contacts it, and the failure names it.
    with contextlib.closing(sqlite3.connect(b / "trust.db")) as db:
        rows = set(db.execute("SELECT kind, host, port, service FROM address_book"))
    assert ("relay", RELAY_ADDRESS, hosts.relay.port, "serve") in rows
    assert {kind for kind, host, _, _ in rows if host == RELAY_ADDRESS} == {"relay"}
    alone = run(b, "ping", "alpha", "--discovery-timeout", "0", prefix=ThreeHosts.on(hosts.b))
    assert alone.returncode == 4
    assert f"last reached through the relay {hosts.relay_arg}: give --relay " \
        f"{hosts.relay_arg}" in alone.stderr

    target = Proc([*ThreeHosts.on(hosts.a), sys.executable, "-u", "-c", _TARGET])
    offerers.append(target)
    target_port = int(target.next_line())
    server = Proc(certpair_argv(a, "tunnel", "serve", "--to", f"{LOOPBACK}:{target_port}",
                                "--relay", hosts.relay_arg, "--no-advertise", "--json",
                                prefix=ThreeHosts.on(hosts.a)))
    offerers.append(server)
    assert server.next_event()["event"] == "listening"
    client = Proc(certpair_argv(b, "tunnel", "connect", "alpha", "--relay", hosts.relay_arg,
                                "--listen", "0", "--json", prefix=ThreeHosts.on(hosts.b)))
    offerers.append(client)
    listening = client.next_event()
    assert (listening["remote"], listening["address_from"]) == (
        f"relay {hosts.relay_arg}", "relay")

    transfer = _transfer(hosts, listening["port"], SIZE)
    assert transfer.next_line(120).strip() == "True"  # the upload, and its end, arrived
    size, digest, end = transfer.next_line(120).split()
    expected = hashlib.sha256(_BLOCK_DOWN * (SIZE // len(_BLOCK_DOWN))).hexdigest()
    assert (int(size), digest, end) == (SIZE, expected, "eof")
    assert client.next_event()["event"] == "opened"
    closed = client.next_event()
    assert (closed["event"], closed["bytes_up"], closed["bytes_down"]) == (
        "closed", SIZE, SIZE + 64)

    # The relay dies in the middle of the next transfer.
    cut = _transfer(hosts, listening["port"], 1024 * 1024, halfway=True)
    assert cut.next_line(60).strip() == "True"
    assert cut.next_line(60).strip() == "halfway"
    hosts.relay.kill()
    size, _, end = cut.next_line(60).split()
    # Cut short, and said so: the local connection is reset, never a clean end.
    assert (int(size) < SIZE, end) == (True, "reset")
    assert client.next_event()["event"] == "opened"
    ended = client.next_event()
    assert ended["event"] == "closed" and ended["bytes_down"] < SIZE + 64
    assert ended["reason"] != "done"

    # Back on the same address: the server's waiting connections return by themselves.
    hosts.relay = RealRelay(host="0.0.0.0", port=hosts.relay.port,
                            prefix=ThreeHosts.on(hosts.r))
    again = _transfer(hosts, listening["port"], 1024 * 1024)
    assert again.next_line(120).strip() == "True"
    size, digest, end = again.next_line(120).split()
    assert (int(size), digest, end) == (SIZE, expected, "eof")
