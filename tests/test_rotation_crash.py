"""SIGKILL at any point of a rotation sync leaves both stores consistent — the old
certificate alone, or old + successor; "told" only if the peer stored it — and the next
sync completes the exchange.

One side is a real process that gets killed; the other side runs the real driver
(``run_sync``) in this process, whose send and receive calls say when to kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import threading

import pytest

from certpair.errors import CertpairError
from certpair.rotation.exchange import run_sync
from certpair.store import Peer, open_store
from certpair.trusted import connect, make_server
from tests.cliutil import CLI, LOOPBACK
from tests.rotation_util import Fleet, fleet, store_rows

__all__ = ["fleet"]

ANSWER_HEADER = b"\x01\x23\x00\x01"


def assert_consistent(fleet: Fleet, old_fp: str, new_fp: str) -> bool:
    """Check both stores; return whether beta holds the successor."""
    rows = store_rows(fleet.home("beta"), "SELECT peer_fingerprint, fingerprint, state"
                                          " FROM successors")
    assert rows in ([], [(old_fp, new_fp, "pending")])
    assert (old_fp,) in store_rows(fleet.home("beta"), "SELECT fingerprint FROM peers")
    told = store_rows(fleet.home("alpha"), "SELECT new_fingerprint FROM rotation_told")
    assert told in ([], [(new_fp,)])
    if told:
        assert rows, "alpha counts beta as told, but beta stored nothing"
    return bool(rows)


def assert_next_sync_completes(fleet: Fleet, old_fp: str, new_fp: str) -> None:
    server = fleet.serve("beta")
    lines = fleet.json_lines("alpha", "sync", server.address)
    assert lines[-1]["told"] in ("accepted", None)
    assert store_rows(fleet.home("beta"), "SELECT peer_fingerprint, fingerprint, state"
                                          " FROM successors") == [(old_fp, new_fp, "pending")]
    assert store_rows(fleet.home("alpha"), "SELECT new_fingerprint FROM rotation_told") == [
        (new_fp,)]


def kill(proc: subprocess.Popen[str] | None) -> None:
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


@pytest.mark.parametrize("point", ["before_hello", "before_statement", "after_statement",
                                   "after_answer"])
def test_killing_the_peer_that_learns_leaves_both_stores_consistent(fleet: Fleet,
                                                                    point: str) -> None:
    [pending] = fleet.json_lines("alpha", "rotate")
    old_fp, new_fp = fleet.ids["alpha"].fingerprint, pending["fingerprint"]
    server = fleet.serve("beta")
    tls, peer = connect(LOOPBACK, server.port, fleet.home("alpha"), timeout=30)
    sends = 0

    def send(data: bytes) -> None:
        nonlocal sends
        sends += 1
        if (point, sends) in (("before_hello", 1), ("before_statement", 2)):
            kill(server.proc)
        tls.sendall(data)
        if (point, sends) == ("after_statement", 2):
            kill(server.proc)

    def recv(size: int) -> bytes:
        data = tls.recv(size)
        if point == "after_answer" and ANSWER_HEADER in data:
            kill(server.proc)
        return data

    with open_store(fleet.home("alpha")) as store, contextlib.suppress(CertpairError, OSError):
        run_sync(recv, send, peer=peer, peer_cert=tls.getpeercert(True) or b"",
                 home=fleet.home("alpha"), store=store, remote=server.address, initiator=True)
    tls.close()
    stored = assert_consistent(fleet, old_fp, new_fp)
    assert stored == (point == "after_answer") or point == "after_statement"
    assert_next_sync_completes(fleet, old_fp, new_fp)


@pytest.mark.parametrize("point", ["before_hello", "before_answer", "after_answer"])
def test_killing_the_rotating_peer_leaves_both_stores_consistent(fleet: Fleet,
                                                                 point: str) -> None:
    [pending] = fleet.json_lines("alpha", "rotate")
    old_fp, new_fp = fleet.ids["alpha"].fingerprint, pending["fingerprint"]
    started = threading.Event()
    rotating: list[subprocess.Popen[str]] = []

    def handle(tls: ssl.SSLSocket, peer: Peer) -> None:
        started.wait(30)
        sends = 0

        def send(data: bytes) -> None:
            nonlocal sends
            sends += 1
            answer = ANSWER_HEADER in data
            if (point == "before_hello" and sends == 1) or (point == "before_answer" and answer):
                kill(rotating[0])
            tls.sendall(data)
            if point == "after_answer" and answer:
                kill(rotating[0])

        with tls.makefile("rb") as reader, open_store(fleet.home("beta")) as store:
            assert reader.readline() == b"sync\n"
            with contextlib.suppress(CertpairError, OSError):
                run_sync(reader.read1, send, peer=peer,
                         peer_cert=tls.getpeercert(True) or b"", home=fleet.home("beta"),
                         store=store, remote="test", initiator=False)

    server = make_server(handle, LOOPBACK, 0, fleet.home("beta"), timeout=30)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"{LOOPBACK}:{server.server_address[1]}"
        rotating.append(subprocess.Popen(
            [*CLI, "--home", str(fleet.home("alpha")), "sync", address],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        started.set()
        rotating[0].wait(30)
        assert rotating[0].returncode == -signal.SIGKILL
    finally:
        server.shutdown()
        server.server_close()
    stored = assert_consistent(fleet, old_fp, new_fp)
    assert stored == (point != "before_hello")
    assert_next_sync_completes(fleet, old_fp, new_fp)
