"""Each certpair port speaks one protocol, and says which (issue 19, docs/PROTOCOL.md §2).

``serve`` and ``tunnel serve`` present the same certificate; before each had its own
ALPN name, ``tunnel connect`` took a device's serve port for its tunnel and handed
serve's protocol to the local application, ``ping`` at a tunnel port sent its line on
to the service behind the tunnel, and a paired ``join`` at a serve port was logged as
an accepted connection. Real processes over loopback.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.tunnel.server import PROBE
from tests.cliutil import LOOPBACK, run
from tests.test_cli_trust import Server
from tests.tunnelutil import WAIT, Devices, Service, dial, make_devices


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    found = make_devices(tmp_path)
    yield found
    for tunnel in found.started:
        if tunnel.proc.poll() is None:
            tunnel.stop()


@pytest.fixture
def serving(devices: Devices) -> Iterator[Server]:
    server = Server(devices.home("alpha"))
    yield server
    server.stop()


def test_tunnel_connect_to_a_serve_port_fails_at_once_and_hands_nothing_on(
    devices: Devices, serving: Server,
) -> None:
    client = devices.connect("beta", "alpha", serving.port)
    with dial(client.port) as app:
        app.sendall(b"ping\n")
        app.settimeout(WAIT)
        try:
            answer = app.recv(4096)
        except ConnectionResetError:  # how tunnel connect ends a connection it cannot carry
            answer = b""
        assert answer == b"", answer  # never serve's JSON answer
    failed = client.event("failed")
    assert "is a `certpair serve` port, not a `certpair tunnel serve` one" in failed["reason"]
    # serve saw a probe: a handshake and nothing else, neither accepted nor a confirmation.
    event = serving.next_event()
    assert (event["event"], event["outcome"]) == ("connection", "probe"), event


def test_ping_to_a_tunnel_port_fails_at_once_and_the_service_gets_no_byte(
    devices: Devices,
) -> None:
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())
        writer.write(b"ping\n")  # what an echo service would answer

    service = Service(record)
    try:
        server = devices.serve(service.address)
        pinged = run(devices.home("beta"), "ping", f"{LOOPBACK}:{server.port}",
                     "--timeout", "60")
        assert pinged.returncode == 4, pinged.stderr
        assert "is a `certpair tunnel serve` port, not a `certpair serve` one" in pinged.stderr
        assert "4491" in pinged.stderr
        # The preamble (tunnel/preamble.py): no intent, no service connection at all.
        server.event("refused", reason=PROBE)
        assert received == []
    finally:
        service.close()


def test_a_paired_join_at_a_serve_port_is_logged_as_a_probe_not_accepted(
    devices: Devices, serving: Server,
) -> None:
    joined = run(devices.home("beta"), "join", serving.address, "1234-5678-6",
                 "--timeout", "60")
    assert joined.returncode == 4, joined.stderr
    assert "is a trusted certpair port (`certpair serve`)" in joined.stderr
    event = serving.next_event()
    assert (event["event"], event["outcome"]) == ("connection", "probe"), event
    logged = run(devices.home("alpha"), "log", "--json")
    rows = [json.loads(line) for line in logged.stdout.splitlines()]
    assert not any(row.get("outcome") == "accepted" for row in rows), rows


def test_clients_without_alpn_are_served_as_before(devices: Devices, serving: Server) -> None:
    # The exported-files recipe (curl, openssl) offers no certpair name: still served.
    beta = devices.home("beta") / "identity"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(devices.home("alpha") / "identity" / "cert.pem")
    context.load_cert_chain(beta / "cert.pem", beta / "key.pem")
    with socket.create_connection((LOOPBACK, serving.port), timeout=WAIT) as raw, \
            context.wrap_socket(raw) as tls:
        assert tls.selected_alpn_protocol() is None
        tls.sendall(b"hello\n")
        assert json.loads(tls.recv(4096))["peer"] == "beta"
    assert serving.next_event()["outcome"] == "accepted"
