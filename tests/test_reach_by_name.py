"""Commands that contact a peer take its name: ``ping PEER``, ``sync PEER`` reach it at its
address-book addresses, say which one answered, and talk to that peer only (real
``serve`` processes on loopback)."""

from __future__ import annotations

import json
import subprocess

from tests.cliutil import CLI, LOOPBACK, Proc
from tests.rotation_util import Fleet, fleet

__all__ = ["fleet"]


def _run(fleet: Fleet, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet.run(who, *args, "--discovery-timeout", "0")


def test_ping_and_sync_take_a_peer_name_and_only_that_peer_may_answer(fleet: Fleet) -> None:
    alpha = fleet.serve("alpha")
    unknown = _run(fleet, "beta", "ping", "alpha")
    assert unknown.returncode == 4
    assert "no address is known for alpha" in unknown.stderr
    assert fleet.run("beta", "ping", alpha.address).returncode == 0  # noted in the book
    pinged = _run(fleet, "beta", "ping", "alpha", "--json")
    assert pinged.returncode == 0, pinged.stderr
    reply = json.loads(pinged.stdout.splitlines()[0])
    assert (reply["remote"], reply["address_from"], reply["peer"]["name"]) == (
        alpha.address, "contact", "alpha")
    prefix = fleet.ids["alpha"].fingerprint.removeprefix("sha256:")[:6]
    by_prefix = _run(fleet, "beta", "sync", prefix, "--json")
    assert by_prefix.returncode == 0, by_prefix.stderr

    # Another paired device now answers at alpha's address: nothing talks to it as alpha.
    alpha.kill()
    gamma = Proc([*CLI, "--home", str(fleet.home("gamma")), "serve", "--json", "--listen",
                  LOOPBACK, "--port", str(alpha.port)])
    fleet.procs.append(gamma)
    assert gamma.next_event()["event"] == "listening"
    for command in ("sync", "ping"):
        refused = _run(fleet, "beta", command, "alpha")
        assert refused.returncode == 1, refused.stderr
        assert f"{alpha.address} is not alpha: it presents" in refused.stderr
        assert "the certificate of gamma, another paired device" in refused.stderr
    every = _run(fleet, "beta", "sync", "--all", "--json")
    assert every.returncode == 4
    summary = json.loads(every.stdout.splitlines()[-1])
    assert (summary["synced"], sorted(summary["unreached"])) == (0, ["alpha", "gamma"])
