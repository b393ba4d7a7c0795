"""The tunnel tells the connecting side the truth (the preamble, tunnel/preamble.py) and
carries the key-rotation sync itself: a rotation of either side completes with both
tunnel ends running, never restarted, and no serve or ping anywhere; being unpaired
there, a tunnel that stopped and an --allow list each read as what they are."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.identity import load_identity
from certpair.store import open_store
from tests.cliutil import run
from tests.tunnelutil import WAIT, Devices, Service, dial, echo, read_all, running_devices, through


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    with running_devices(tmp_path) as found:
        for who, whom in (("alpha", "delta"), ("delta", "alpha")):  # one peer each: no --force
            with open_store(found.home(who)) as store:
                store.remove_peer(found.fp(whom))
        yield found


@pytest.fixture
def service() -> Iterator[Service]:
    with Service(echo) as running:
        yield running


def learned(home: Path) -> int:
    done = run(home, "rotate", "--status", "--json")
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout.splitlines()[0])["learned"])


@pytest.mark.parametrize("allow", [False, True])
def test_the_connecting_side_rotates_over_the_tunnel_alone(
        devices: Devices, service: Service, allow: bool) -> None:
    server, client = devices.pipe(service.address, *(("--allow", "beta") if allow else ()))
    beta = devices.home("beta")
    assert run(beta, "rotate").returncode == 0
    assert through(client.port) == b"hello"  # the statement went first, on the tunnel
    assert learned(beta) == 1
    assert server.event("synced")["heard"] == "ACCEPTED"
    assert run(beta, "rotate", "--finish").returncode == 0  # no --force: alpha learned it
    assert through(client.port) == b"hello"
    new = load_identity(beta).fingerprint
    assert server.event("opened", id=2)["peer"]["fingerprint"] == new


def test_the_serving_side_rotates_over_the_tunnel_alone(
        devices: Devices, service: Service) -> None:
    _, client = devices.pipe(service.address)
    alpha = devices.home("alpha")
    assert run(alpha, "rotate").returncode == 0
    assert through(client.port) == b"hello"  # its status says: a statement waits
    assert client.event("synced")["heard"] == "ACCEPTED"  # fetched on a connection of its own
    assert learned(alpha) == 1
    assert run(alpha, "rotate", "--finish").returncode == 0
    assert through(client.port) == b"hello"
    new = load_identity(alpha).fingerprint
    assert client.event("closed", id=2)["peer"]["fingerprint"] == new


def test_unpaired_there_during_an_open_connection_is_said_with_what_to_do(
        devices: Devices, service: Service) -> None:
    _, client = devices.pipe(service.address)
    with dial(client.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        assert run(devices.home("alpha"), "unpair", "beta").returncode == 0
        with pytest.raises(ConnectionResetError):
            read_all(sock)
    reason = client.event("closed")["reason"]
    assert reason.startswith("alpha refused this device: it does not trust it"), reason
    assert "pair again" in reason


def test_a_far_end_that_stopped_is_not_told_as_a_refusal(
        devices: Devices, service: Service) -> None:
    server, client = devices.pipe(service.address, "--drain-timeout", "0")
    with dial(client.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        server.stop()
        with pytest.raises(ConnectionResetError):
            read_all(sock)
    reason = client.event("closed")["reason"]
    assert reason.startswith("alpha's tunnel stopped"), reason


def test_a_device_left_out_of_allow_is_told_so(devices: Devices, service: Service) -> None:
    devices.trust("alpha", "delta")
    _, client = devices.pipe(service.address, "--allow", "delta")
    with dial(client.port) as sock, pytest.raises(ConnectionResetError):
        read_all(sock)
    reason = client.wait_for(lambda e: e["event"] in ("closed", "failed"), WAIT)["reason"]
    assert reason.startswith("alpha's tunnel does not let this device through"), reason
