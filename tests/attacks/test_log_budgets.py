"""Records that cannot be flushed away (issue 19).

The audit log's row cap let traffic evict the records that matter: a flood from 60
addresses evicted the attacker's own code-spending guess, and 60 accepted connections
of one paired device evicted every pairing and unpairing row. Now traffic (refusals,
connections) and records (pairings, unpairings, renames, rotations, burned codes) have
separate budgets, and a paired device's connections are counted per minute as refusals
are. Real adversaries with a tiny cap (CERTPAIR_LOG_MAX_ROWS=10): joiners against a real
``pair``, a paired device's connections to a real ``serve``, over loopback.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from certpair.identity import create_identity
from certpair.store import open_store
from tests.attacks.forged_certs import knock, refused_joiner
from tests.cliutil import Offerer, run

CLI = [sys.executable, "-m", "certpair"]
WAIT = 60.0
CAP = "10"


def test_a_flood_from_60_addresses_keeps_the_attackers_code_spending_guess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CERTPAIR_LOG_MAX_ROWS", CAP)  # for every process this test starts
    create_identity(tmp_path / "alpha", "alpha")
    create_identity(tmp_path / "mallory", "mallory")
    offerer = Offerer(tmp_path / "alpha", advertise=False)
    try:
        port = int(offerer.listening["port"])
        # The guess that spends the code: a record, one row.
        wrong = "0000-0000-0" if offerer.code != "0000-0000-0" else "1111-1111-0"
        guessed = run(tmp_path / "mallory", "join", f"127.0.0.1:{port}", wrong)
        assert guessed.returncode != 0
        while offerer.next_event()["event"] not in ("rejected", "failed"):
            pass
        context = refused_joiner(tmp_path)
        for i in range(60):  # 60 source hosts, each refused: traffic
            knock(context, port, f"127.0.1.{i + 2}")
        seen = 0
        while seen < 60:  # pair prints each refusal after logging it
            seen += offerer.next_event()["event"] == "refused"
    finally:
        offerer.kill()
    with open_store(tmp_path / "alpha") as store:
        events = store.events()
    spent = [e for e in events if e.kind == "pairing" and e.remote.startswith("127.0.0.1:")]
    assert len(spent) == 1, events  # the guess, with its port: not a counted refusal
    assert spent[0].outcome == "failed"
    refused = [e for e in events if e.remote.startswith("127.0.1.")]
    assert 1 <= len(refused) <= 11  # the traffic budget held to its cap


def _accepted_connection(port: int, home: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(home / "identity" / "cert.pem", home / "identity" / "key.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(b"hello\n")
        assert tls.recv(4096)


def test_60_accepted_connections_of_a_paired_device_keep_every_pairing_and_unpairing(
    tmp_path: Path,
) -> None:
    ids = {n: create_identity(tmp_path / n, n) for n in ("alpha", "beta", "carol")}
    alpha = tmp_path / "alpha"
    with open_store(alpha) as store:
        for name in ("beta", "carol"):
            store.commit_pairing(name=name, cert_der=ids[name].cert_der, mode="cpace",
                                 role="offerer", remote="127.0.0.1:1")
        store.rename_peer(ids["carol"].fingerprint, "carol-laptop")
        store.remove_peer(ids["carol"].fingerprint)
    serve = subprocess.Popen(
        [*CLI, "--home", str(alpha), "serve", "--json", "--listen", "127.0.0.1", "--port",
         "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CERTPAIR_LOG_MAX_ROWS": CAP})
    try:
        assert serve.stdout is not None
        port = int(json.loads(serve.stdout.readline())["port"])
        for _ in range(60):
            _accepted_connection(port, tmp_path / "beta")
            # serve prints a connection after logging it: read each before the next.
            assert json.loads(serve.stdout.readline())["outcome"] == "accepted"
    finally:
        serve.terminate()
        serve.communicate(timeout=WAIT)
    with open_store(alpha) as store:
        events = store.events()
    kinds = [(e.kind, e.outcome) for e in events if e.kind != "connection"]
    assert sorted(kinds) == sorted([("pairing", "paired"), ("pairing", "paired"),
                                    ("rename", "renamed"), ("unpairing", "removed")]), kinds
    accepted = [e for e in events if e.kind == "connection"]
    # Counted per peer per minute, as refusals are: one row a minute, not one each.
    assert 1 <= len(accepted) <= 3, accepted
    assert sum(e.count for e in accepted) == 60
    assert {e.peer_fingerprint for e in accepted} == {ids["beta"].fingerprint}
