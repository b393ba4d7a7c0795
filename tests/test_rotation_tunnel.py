"""Key rotation with a running tunnel: once the peer learned the successor (on a ping to
its serve), the rotated device's tunnel is let through under the new key, and the old
key is refused after the new one has been used."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cliutil import LOOPBACK, run
from tests.rotation_util import ServeProc
from tests.tunnelutil import Devices, Service, Tunnel, echo, running_devices, through


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    with running_devices(tmp_path) as found:
        yield found


def test_rotated_device_tunnels_under_the_new_key_and_the_old_key_is_then_refused(
        devices: Devices) -> None:
    service = Service(echo)
    serve = ServeProc(devices.home("alpha"))
    try:
        tunnel = devices.serve(service.address)  # alpha's tunnel serve, running throughout
        old_home = devices.root / "beta-old"
        shutil.copytree(devices.home("beta"), old_home)  # beta's old key, kept
        beta = devices.home("beta")
        assert run(beta, "rotate").returncode == 0
        assert run(beta, "ping", serve.address).returncode == 0  # alpha learns it
        assert run(beta, "rotate", "--finish").returncode == 0
        new_end = devices.connect("beta", "alpha", tunnel.port)
        assert through(new_end.port) == b"hello"  # the first new-key connection
        stale = Tunnel(old_home, "connect", "alpha", "--to", f"{LOOPBACK}:{tunnel.port}",
                       "--listen", "0")
        devices.started.append(stale)
        assert through(stale.port) == b""  # the old key is refused now
    finally:
        serve.kill()
        service.close()
