"""An unpaired host cannot lock paired devices out with idle sockets (issue 20).

The adversary opens plain TCP connections to a real ``tunnel serve`` and a real
``serve`` and never sends a byte: 1,000 from one address (127.0.0.2), then 2,000 from
eight (127.0.0.2-9). While it holds them, a paired device's tunnel connection and its
``ping`` must get through. On main both fell: the sockets filled ``--max-connections``
(1,000) of ``tunnel serve`` and the 256 threads of ``serve`` before any TLS byte, and
held them for 10 s (30 s per read for ``serve``). Unproven connections now hold slots
of their own (certpair.trusted.handshakes), bounded per source and in total, expiring
with the handshake's deadline. How fast the device gets through is a benchmark figure
(``bench/flood.py``), not asserted here.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cliutil import LOOPBACK, certpair_argv, run
from tests.tunnelutil import WAIT, Devices, Service, dial, echo, running_devices

SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]


@pytest.fixture(autouse=True)
def _descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 4500:
        pytest.skip("needs 4,500 descriptors for the flood")


@contextlib.contextmanager
def _flood(port: int, sources: list[str], per_source: int) -> Iterator[list[socket.socket]]:
    """Hold ``per_source`` idle connections from each source address, opened round-robin
    (each connect returns once the kernel queued it: the server accepts them in order,
    so they are all ahead of the paired device)."""
    held: list[socket.socket] = []
    try:
        for _ in range(per_source):
            for source in sources:
                sock = socket.socket()
                held.append(sock)
                sock.bind((source, 0))
                with contextlib.suppress(ConnectionResetError):  # refused at once
                    sock.connect((LOOPBACK, port))
        yield held
    finally:
        for sock in held:
            sock.close()


def _through_tunnel(port: int) -> bytes:
    with dial(port) as sock:
        sock.sendall(b"ping")
        return sock.recv(4)


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    with running_devices(tmp_path) as found:
        yield found


def test_idle_sockets_of_unpaired_hosts_never_lock_a_paired_device_out_of_the_tunnel(
    devices: Devices,
) -> None:
    service = Service(echo)
    try:
        server, client = devices.pipe(service.address)
        with _flood(server.port, SOURCES[:1], 1000) as held:
            assert _through_tunnel(client.port) == b"ping"  # on main: reset, 1,000 full
            # The flood's slots expire with the whole handshake's deadline (5 s):
            held[0].settimeout(WAIT)
            with contextlib.suppress(ConnectionResetError):
                assert held[0].recv(1) == b""
        with _flood(server.port, SOURCES, 250):
            assert _through_tunnel(client.port) == b"ping"  # on main: reset
        code, rest, err = server.stop()
        assert code == 0 and "Traceback" not in err, err
        refused = [e for e in server.seen + rest if e["event"] == "refused"]
        # Counted, not one line each: a few events per source and reason.
        assert len(refused) <= 4 * len(SOURCES) * 3
        assert sum(e["count"] for e in refused if e["remote"] == SOURCES[0]) >= 400
        reasons = {e["reason"] for e in refused}
        assert "handshake not finished in time" in reasons, reasons
        assert "too many unfinished handshakes from this address" in reasons, reasons
    finally:
        service.close()


def test_idle_sockets_of_unpaired_hosts_never_lock_a_paired_device_out_of_serve(
    devices: Devices,
) -> None:
    alpha, beta = devices.home("alpha"), devices.home("beta")
    proc = subprocess.Popen(certpair_argv(alpha, "serve", "--json", "--listen", LOOPBACK,
                                          "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(json.loads(proc.stdout.readline())["port"])
        for sources, each in ((SOURCES[:1], 1000), (SOURCES, 250)):
            with _flood(port, sources, each):
                pinged = run(beta, "ping", f"{LOOPBACK}:{port}", "--timeout", "20")
                assert pinged.returncode == 0, pinged.stderr  # on main: 256 threads full
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=WAIT)
        assert b"Traceback" not in err, err
    rows = [json.loads(r) for r in
            run(alpha, "log", "--json", "--limit", "1000").stdout.splitlines()]
    flood_rows = [r for r in rows if str(r.get("remote")).split(":")[0] in SOURCES]
    assert flood_rows, rows[:5]
    assert len(flood_rows) <= 4 * len(SOURCES) * 3  # one row per source, reason, minute
