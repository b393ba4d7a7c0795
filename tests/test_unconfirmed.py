"""Unconfirmed pairings are settled by the next trusted contact (issue 11 section 1).

Real ``serve`` and ``ping`` processes over loopback mutual TLS, with stores set up so
that one or both sides hold the other marked unconfirmed, as a pairing whose last
message was lost leaves them.
"""

from __future__ import annotations

from pathlib import Path

from certpair.store import open_store
from tests.test_cli_trust import Devices, assert_one_error_line, devices, run, run_json

__all__ = ["devices"]  # the fixture, shared with test_cli_trust


def _mark(devices: Devices, who: str, whom: str, *, confirmed: bool) -> None:
    with open_store(devices.home(who)) as store:
        store.commit_pairing(name=whom, cert_der=devices.ids[whom].cert_der, mode="cpace",
                             role="joiner", remote="test", confirmed=confirmed)


def _confirmed(home: Path, fingerprint: str) -> bool | None:
    with open_store(home) as store:
        peer = store.peer(fingerprint)
    return None if peer is None else peer.confirmed


def test_ping_to_serve_confirms_an_unconfirmed_pairing_on_both_sides(devices: Devices) -> None:
    _mark(devices, "alpha", "beta", confirmed=False)
    _mark(devices, "beta", "alpha", confirmed=False)
    serving = devices.serve("alpha")
    lines = run_json(devices.home("beta"), "ping", serving.address)
    assert [line["event"] for line in lines] == ["confirmed", "reply"]
    note = serving.next_event()
    assert note["event"] == "note" and "confirmed" in note["text"]
    assert serving.next_event()["outcome"] == "accepted"
    assert _confirmed(devices.home("alpha"), devices.fp("beta")) is True
    assert _confirmed(devices.home("beta"), devices.fp("alpha")) is True
    # Settled once: the next contact says nothing more.
    again = run_json(devices.home("beta"), "ping", serving.address)
    assert [line["event"] for line in again] == ["reply"]


def test_an_unconfirmed_client_refused_by_the_server_is_told_to_pair_again(
    devices: Devices,
) -> None:
    # gamma kept alpha unconfirmed; alpha never stored gamma.
    _mark(devices, "gamma", "alpha", confirmed=False)
    serving = devices.serve("alpha")
    result = run(devices.home("gamma"), "ping", serving.address)
    assert_one_error_line(result, 1, "did not complete there; pair again")
    assert serving.next_event()["reason"] == "not a paired device"
    assert _confirmed(devices.home("gamma"), devices.fp("alpha")) is False


def test_an_unconfirmed_server_refused_by_the_client_tells_its_user_to_pair_again(
    devices: Devices,
) -> None:
    # alpha kept gamma unconfirmed; gamma (the client) does not trust alpha at all.
    _mark(devices, "alpha", "gamma", confirmed=False)
    with open_store(devices.home("gamma")) as store:
        store.remove_peer(devices.fp("alpha"))
    _mark(devices, "gamma", "beta", confirmed=True)  # gamma trusts someone else only
    serving = devices.serve("alpha")
    result = run(devices.home("gamma"), "ping", serving.address)
    assert result.returncode == 1, result.stderr
    event = serving.next_event()
    assert event["outcome"] == "refused"
    assert "unconfirmed here: gamma" in event["reason"] and "pair again" in event["reason"]
    assert _confirmed(devices.home("alpha"), devices.fp("gamma")) is False


def test_peers_marks_unconfirmed_rows(devices: Devices) -> None:
    _mark(devices, "alpha", "beta", confirmed=False)
    (listed,) = run_json(devices.home("alpha"), "peers")
    assert listed["confirmed"] is False
    text = run(devices.home("alpha"), "peers").stdout
    assert "unconfirmed" in text
