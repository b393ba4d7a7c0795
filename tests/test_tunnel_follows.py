"""Running things follow the peer: a key rotation of either side, with both tunnel ends
running and never restarted, changes nothing for the tunnel (with and without
``--allow``); a pinned library context keeps working after its peer rotated; a device
that still presents a key its rotation replaced is told as such, never as a stranger."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.identity import load_identity
from certpair.store import open_store
from certpair.trusted import client_context, connect
from tests.cliutil import LOOPBACK, run
from tests.rotation_util import ServeProc
from tests.tunnelutil import Devices, Service, echo, running_devices, through


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    with running_devices(tmp_path) as found:
        yield found


@pytest.fixture
def service() -> Iterator[Service]:
    with Service(echo) as running:
        yield running


def rotate_everywhere(devices: Devices, who: str, whom: str) -> str:
    """``who`` rotates, ``whom`` learns it (a ping to its serve), ``who`` finishes and
    pings again, so that ``whom`` trusts only the new key. Returns the new fingerprint."""
    server = ServeProc(devices.home(whom))
    try:
        home = devices.home(who)
        for step in (("rotate",), ("ping", server.address), ("rotate", "--finish", "--force"),
                     ("ping", server.address)):
            done = run(home, *step)
            assert done.returncode == 0, (step, done.stderr)
    finally:
        server.kill()
    new = load_identity(devices.home(who)).fingerprint
    with open_store(devices.home(whom)) as store:
        assert store.find_peer(who).fingerprint == new  # the old key is refused there now
    return new


@pytest.mark.parametrize("allow", [False, True])
def test_the_connecting_side_rotates_and_both_running_tunnel_ends_carry_on(
        devices: Devices, service: Service, allow: bool) -> None:
    server, client = devices.pipe(service.address, *(("--allow", "beta") if allow else ()))
    assert through(client.port) == b"hello"
    new = rotate_everywhere(devices, "beta", "alpha")
    assert through(client.port) == b"hello"  # beta's tunnel presents its new key live
    opened = [e for e in server.seen if e["event"] == "opened"]
    assert server.event("closed", id=2)["peer"]["fingerprint"] == new, opened


def test_the_serving_side_rotates_and_both_running_tunnel_ends_carry_on(
        devices: Devices, service: Service) -> None:
    old_home = devices.root / "alpha-old"
    shutil.copytree(devices.home("alpha"), old_home)  # alpha's old key, kept
    _, client = devices.pipe(service.address)
    assert through(client.port) == b"hello"
    new = rotate_everywhere(devices, "alpha", "beta")
    assert through(client.port) == b"hello"  # alpha's tunnel serve presents its new key
    assert client.event("closed", id=2)["peer"]["fingerprint"] == new
    # Whatever still runs on the replaced key is told as that, never as a stranger.
    stale = devices.serve(service.address, home="alpha-old")
    devices.ids["alpha-old"] = devices.ids["alpha"]
    to_stale = devices.connect("beta", "alpha", stale.port)
    assert through(to_stale.port) == b""
    reason = to_stale.event("failed")["reason"]
    assert "alpha presents its former certificate" in reason, reason
    assert f"replaced by {new}" in reason, reason


def test_a_pinned_client_context_keeps_working_after_its_peer_rotated(
        devices: Devices) -> None:
    alpha_serve = ServeProc(devices.home("alpha"))
    try:
        context = client_context(devices.home("beta"), peer="alpha")
        tls, peer = connect(LOOPBACK, alpha_serve.port, devices.home("beta"), context=context)
        tls.close()
        assert peer.name == "alpha"
        new = rotate_everywhere(devices, "alpha", "beta")
        # The same context object, the same running serve: both follow the rotation.
        tls, peer = connect(LOOPBACK, alpha_serve.port, devices.home("beta"), context=context,
                            peer="alpha")
        tls.close()
        assert peer.fingerprint == new
    finally:
        alpha_serve.kill()
