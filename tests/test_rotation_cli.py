"""Key rotation between real processes: a running ``serve``, ``ping``, ``sync``, ``rotate``."""

from __future__ import annotations

import json
import shutil
import stat

from certpair.identity import fingerprint
from tests.rotation_util import Fleet, fleet

__all__ = ["fleet"]


def test_peer_learns_on_next_ping_then_new_key_in_and_old_key_out_after_first_use(
        fleet: Fleet) -> None:
    server = fleet.serve("beta")
    old_fp = fleet.ids["alpha"].fingerprint
    [pending] = fleet.json_lines("alpha", "rotate")
    new_fp = pending["fingerprint"]
    key = fleet.home("alpha") / "identity" / "next-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    shutil.copytree(fleet.home("alpha"), fleet.root / "alpha-old")  # the old key, kept

    refused = fleet.run("alpha", "rotate", "--finish")
    assert refused.returncode == 5 and "beta" in refused.stderr, refused.stderr

    lines = fleet.json_lines("alpha", "ping", server.address)
    assert lines[1]["told"] == "accepted" and lines[1]["new_fingerprint"] == new_fp
    event = server.next_event()  # the connection, then what serve heard
    assert event["event"] == "connection"
    assert server.next_event()["heard"] == "accepted"
    [beta_view] = [p for p in fleet.json_lines("beta", "peers") if p["name"] == "alpha"]
    assert beta_view["fingerprint"] == old_fp
    assert beta_view["rotation"]["state"] == "pending"
    assert beta_view["rotation"]["successor"] == new_fp
    status = fleet.json_lines("alpha", "rotate", "--status")
    assert status[0]["pending"] == new_fp and status[0]["missing"] == 0

    # Pending: both keys are accepted until the first connection under the new one.
    assert fleet.run("alpha-old", "ping", server.address).returncode == 0
    assert fleet.run("alpha", "rotate", "--finish").returncode == 0
    assert fleet.reload("alpha").fingerprint == new_fp
    assert fleet.run("alpha", "ping", server.address).returncode == 0
    [beta_view] = [p for p in fleet.json_lines("beta", "peers") if p["name"] == "alpha"]
    assert beta_view["fingerprint"] == new_fp
    assert beta_view["rotation"] == {"state": "completed", "previous": old_fp,
                                     "completed_at": beta_view["rotation"]["completed_at"]}
    old = fleet.run("alpha-old", "ping", server.address)
    assert old.returncode == 1, old.stderr
    kinds = [(e["kind"], e["outcome"]) for e in fleet.json_lines("beta", "log")]
    assert ("rotation", "learned") in kinds and ("rotation", "completed") in kinds
    assert ("rotation", "told") in [(e["kind"], e["outcome"])
                                    for e in fleet.json_lines("alpha", "log")]


def test_serving_device_rotates_and_the_pinging_peer_learns_it(fleet: Fleet) -> None:
    server = fleet.serve("beta")
    [pending] = fleet.json_lines("beta", "rotate")
    lines = fleet.json_lines("alpha", "ping", server.address)
    assert lines[1]["heard"] == "accepted"
    assert lines[1]["peer_new_fingerprint"] == pending["fingerprint"]
    assert fleet.run("beta", "rotate", "--finish", "--force").returncode == 0  # gamma left
    server.kill()
    server = fleet.serve("beta")  # serve presents the identity it started with
    assert fleet.run("alpha", "ping", server.address).returncode == 0
    [view] = [p for p in fleet.json_lines("alpha", "peers") if p["name"] == "beta"]
    assert view["fingerprint"] == pending["fingerprint"]
    assert fleet.run("gamma", "ping", server.address).returncode == 1  # never learned it


def test_sync_by_peer_name_and_all_then_abort_rules(fleet: Fleet) -> None:
    server = fleet.serve("beta")
    no_address = fleet.run("alpha", "sync", "beta", "--discovery-timeout", "0")
    assert no_address.returncode == 4 and "no address is known for beta" in no_address.stderr
    unknown = fleet.run("alpha", "sync", "--all", "--json")  # nobody's address known
    assert unknown.returncode == 4
    summary = json.loads(unknown.stdout.splitlines()[-1])
    assert summary["synced"] == 0 and "beta" in summary["unreached"]
    first = fleet.json_lines("alpha", "sync", server.address)
    assert first[0]["told"] is None and first[0]["heard"] is None
    [pending] = fleet.json_lines("alpha", "rotate")
    again = fleet.run("alpha", "rotate")
    assert again.returncode == 2 and "already pending" in again.stderr
    lines = fleet.json_lines("alpha", "sync", "--all")
    assert lines[0]["told"] == "accepted" and lines[-1]["synced"] == 1
    assert fleet.json_lines("alpha", "sync", "beta")[0]["told"] is None  # told once only
    refused = fleet.run("alpha", "rotate", "--abort")
    assert refused.returncode == 5 and "beta" in refused.stderr
    assert fleet.run("alpha", "rotate", "--abort", "--force").returncode == 0
    assert not (fleet.home("alpha") / "identity" / "next-cert.pem").exists()
    assert fleet.reload("alpha").fingerprint != pending["fingerprint"]
    # beta keeps the first successor it stored: a different rotation now conflicts.
    fleet.json_lines("alpha", "rotate")
    lines = fleet.json_lines("alpha", "sync", "beta")
    assert lines[0]["told"] == "conflict"
    assert fingerprint(fleet.ids["alpha"].cert_der) == fleet.reload("alpha").fingerprint
