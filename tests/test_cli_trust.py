"""End to end after pairing: ``serve``, ``ping``, ``unpair``, ``rename``, ``export``, ``log``
as real processes, and interop with the real ``openssl`` and ``curl`` binaries.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from certpair import trusted
from certpair.identity import Identity, create_identity
from certpair.ports import SERVE_PORT
from certpair.store import MIN_PREFIX_DIGITS, open_store
from tests.test_store import certs_sharing_a_prefix

CLI = [sys.executable, "-m", "certpair"]
WAIT = 30.0
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
NEEDS_OPENSSL = pytest.mark.skipif(
    OPENSSL is None, reason="needs the openssl binary (Debian: apt install openssl)")
NEEDS_CURL = pytest.mark.skipif(
    CURL is None, reason="needs the curl binary (Debian: apt install curl)")


def run(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=60, check=False, input=stdin)


def run_json(home: Path, *args: str) -> list[dict[str, Any]]:
    result = run(home, *args, "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


class Lines:
    """The lines a process writes, readable with a timeout (no sleeps, no hangs)."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put("")

    def next(self) -> str:
        return self.queue.get(timeout=WAIT)


class Server:
    """A ``certpair serve --json`` process on a free loopback port."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "--home", str(home), "serve", "--json", "--listen", "127.0.0.1", "--port",
             "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)
        listening = self.next_event()
        assert listening["event"] == "listening", listening
        self.port = int(listening["port"])
        self.address = f"127.0.0.1:{self.port}"

    def next_event(self) -> dict[str, Any]:
        line = self.lines.next()
        assert line, f"serve ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        event: dict[str, Any] = json.loads(line)
        return event

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=WAIT)
        return err


@dataclass
class Devices:
    """alpha and beta are paired; gamma trusts alpha, but nobody trusts gamma."""

    root: Path
    ids: dict[str, Identity]
    servers: list[Server]

    def home(self, name: str) -> Path:
        return self.root / name

    def trust(self, who: str, whom: str, name: str | None = None) -> None:
        with open_store(self.home(who)) as store:
            store.commit_pairing(name=name or whom, cert_der=self.ids[whom].cert_der,
                                 mode="cpace", role="offerer", remote="test")

    def serve(self, name: str) -> Server:
        self.servers.append(Server(self.home(name)))
        return self.servers[-1]

    def fp(self, name: str) -> str:
        return self.ids[name].fingerprint


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    found = Devices(tmp_path, {n: create_identity(tmp_path / n, n)
                               for n in ("alpha", "beta", "gamma")}, [])
    found.trust("alpha", "beta")
    found.trust("beta", "alpha")
    found.trust("gamma", "alpha")
    yield found
    for server in found.servers:
        err = server.stop()
        assert "Traceback" not in err, err


def assert_one_error_line(result: subprocess.CompletedProcess[str], status: int,
                          says: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr


# -- serve and ping ------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "client"), [("alpha", "beta"), ("beta", "alpha")])
def test_ping_succeeds_both_ways_and_serve_logs_the_accepted_peer(
    devices: Devices, server: str, client: str
) -> None:
    serving = devices.serve(server)
    (reply,) = run_json(devices.home(client), "ping", serving.address)
    assert reply["event"] == "reply"
    assert reply["peer"] == {"name": server, "fingerprint": devices.fp(server)}
    assert reply["rtt_ms"] > 0 and reply["connect_ms"] > 0
    event = serving.next_event()
    assert (event["outcome"], event["peer"]) == (
        "accepted", {"name": client, "fingerprint": devices.fp(client)})


def test_an_unpaired_device_is_refused_by_serve_and_its_ping_exits_1(devices: Devices) -> None:
    serving = devices.serve("alpha")
    result = run(devices.home("gamma"), "ping", serving.address)
    assert_one_error_line(result, 1, "refused this device")
    event = serving.next_event()
    assert (event["outcome"], event["peer"], event["reason"]) == (
        "refused", None, "not a paired device")


def test_ping_to_an_unpaired_server_exits_1_and_that_server_logs_why(devices: Devices) -> None:
    devices.trust("gamma", "beta")  # gamma would accept beta, but beta does not trust gamma
    serving = devices.serve("gamma")
    result = run(devices.home("beta"), "ping", serving.address)
    assert_one_error_line(result, 1, f"{serving.address} is not a paired device")
    event = serving.next_event()
    assert (event["outcome"], event["reason"]) == (
        "refused", "the other device does not trust this one")


def test_after_unpair_the_next_ping_is_refused_without_restarting_serve(
    devices: Devices,
) -> None:
    serving = devices.serve("alpha")
    assert run(devices.home("beta"), "ping", serving.address).returncode == 0
    assert serving.next_event()["outcome"] == "accepted"
    unpaired = run_json(devices.home("alpha"), "unpair", "beta")
    assert unpaired == [{"event": "unpaired",
                         "peer": {"name": "beta", "fingerprint": devices.fp("beta")}}]
    assert_one_error_line(run(devices.home("beta"), "ping", serving.address), 1, "refused")
    assert serving.next_event()["reason"] == "not a paired device"
    assert serving.proc.poll() is None


def test_after_unpair_on_the_client_its_ping_refuses_the_server(devices: Devices) -> None:
    serving = devices.serve("alpha")
    assert run(devices.home("beta"), "unpair", devices.fp("alpha")[:20]).returncode == 0
    assert_one_error_line(run(devices.home("beta"), "ping", serving.address), 1,
                          "is not a paired device")


def test_ping_nobody_listening_exits_4(devices: Devices) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    assert_one_error_line(run(devices.home("beta"), "ping", f"127.0.0.1:{port}"), 4,
                          "cannot reach")


def test_the_serve_port_and_the_sync_request_line_are_each_written_once() -> None:
    source = Path(trusted.__file__).resolve().parent.parent
    texts = {p.relative_to(source).as_posix(): p.read_text() for p in source.rglob("*.py")}
    assert [p for p, t in texts.items() if f"= {SERVE_PORT}\n" in t] == ["ports.py"]  # one
    assert [p for p, t in texts.items() if 'b"sync\\n"' in t] == ["rotation/exchange.py"]
    assert trusted.DEFAULT_SERVE_PORT == SERVE_PORT
    assert "serving.py" in texts and "class _Server" not in texts["cli/serve_cmd.py"]


@pytest.mark.parametrize("args", [["serve", "--port", "0"], ["ping", "127.0.0.1"], ["export"]])
def test_commands_need_an_identity_and_exit_5_without_one(tmp_path: Path,
                                                           args: list[str]) -> None:
    assert_one_error_line(run(tmp_path / "empty", *args), 5, "init' first")


# -- unpair, rename, log -------------------------------------------------------------------


def test_unpair_and_rename_exit_2_for_unknown_ambiguous_or_bad_input(devices: Devices) -> None:
    home = devices.home("alpha")
    first, second = certs_sharing_a_prefix(MIN_PREFIX_DIGITS)
    with open_store(home) as store:
        fp1 = store.commit_pairing(name="one", cert_der=first, mode="cpace", role="joiner",
                                   remote="test").fingerprint
        store.commit_pairing(name="two", cert_der=second, mode="cpace", role="joiner",
                             remote="test")
    shared = fp1[7 : 7 + MIN_PREFIX_DIGITS]
    assert_one_error_line(run(home, "unpair", shared), 2, "matches 2 paired devices")
    assert_one_error_line(run(home, "rename", shared, "x"), 2, "matches 2 paired devices")
    assert_one_error_line(run(home, "unpair", "nobody"), 2, "no paired device")
    assert_one_error_line(run(home, "unpair", fp1[7:10]), 2, "no paired device")  # too short
    assert_one_error_line(run(home, "rename", "one", "bad\tname"), 2, "control characters")
    assert len(run_json(home, "peers")) == 3


def test_rename_then_unpair_by_the_new_name(devices: Devices) -> None:
    home = devices.home("alpha")
    renamed = run_json(home, "rename", devices.fp("beta")[:12], "kitchen")
    assert renamed == [{"event": "renamed", "old_name": "beta",
                        "peer": {"name": "kitchen", "fingerprint": devices.fp("beta")}}]
    assert [p["name"] for p in run_json(home, "peers")] == ["kitchen"]
    text = run(home, "unpair", "kitchen")
    assert text.returncode == 0 and text.stdout.startswith("Unpaired kitchen")
    assert run_json(home, "peers") == []


def test_log_json_shows_pairing_and_connection_events_newest_first(devices: Devices) -> None:
    serving = devices.serve("alpha")
    assert run(devices.home("beta"), "ping", serving.address).returncode == 0
    assert run(devices.home("gamma"), "ping", serving.address).returncode == 1
    serving.next_event()
    serving.next_event()
    server_log = run_json(devices.home("alpha"), "log")
    assert [(e["kind"], e["role"], e["outcome"], e["peer_name"]) for e in server_log] == [
        ("connection", "server", "refused", None),
        ("connection", "server", "accepted", "beta"),
        ("pairing", "offerer", "paired", "beta"),
    ]
    assert server_log[1]["peer_fingerprint"] == devices.fp("beta")
    assert (server_log[0]["remote"], server_log[0]["count"]) == ("127.0.0.1", 1)
    client_log = run_json(devices.home("gamma"), "log", "--limit", "1")
    assert [(e["kind"], e["role"], e["outcome"]) for e in client_log] == [
        ("connection", "client", "refused")]
    text = run(devices.home("alpha"), "log", "--limit", "2").stdout.splitlines()
    assert len(text) == 3 and "refused" in text[1] and "accepted" in text[2]  # header first


# -- export, openssl, curl -----------------------------------------------------------------


def export(devices: Devices, name: str, *args: str) -> dict[str, Any]:
    out = devices.root / f"export-{name}"
    (found,) = run_json(devices.home(name), "export", "--out", str(out), *args)
    return found


def test_export_writes_the_certificate_and_the_peers_but_only_points_to_the_key(
    devices: Devices,
) -> None:
    devices.trust("alpha", "gamma")
    found = export(devices, "alpha")
    home = devices.home("alpha")
    assert found["key"] == str((home / "identity" / "key.pem").resolve())
    assert sorted(p.name for p in Path(found["cert"]).parent.iterdir()) == [
        "cert.pem", "peers.pem"]
    assert Path(found["cert"]).read_text() == (home / "identity" / "cert.pem").read_text()
    bundle = Path(found["peers"]).read_text()
    assert bundle.count("BEGIN CERTIFICATE") == 2
    assert sorted(d["fingerprint"] for d in found["devices"]) == sorted(
        [devices.fp("beta"), devices.fp("gamma")])
    assert all(d["dns_names"][0].endswith(".certpair.invalid") for d in found["devices"])
    one = export(devices, "alpha", "--peer", "gamma")
    assert [d["name"] for d in one["devices"]] == ["gamma"]
    assert Path(one["peers"]).read_text().count("BEGIN CERTIFICATE") == 1
    assert_one_error_line(run(home, "export", "--peer", "nobody"), 2, "no paired device")


def s_client(devices: Devices, server: Server, cert: str, key: str, ca: str
             ) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    # One HTTP request: serve answers it and closes, so s_client ends by itself.
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", server.address, "-cert", cert, "-key", key,
         "-CAfile", ca, "-verify_return_error", "-tls1_3", "-quiet", "-ign_eof"],
        input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=WAIT,
        check=False)


@NEEDS_OPENSSL
def test_openssl_s_client_with_exported_files_talks_to_serve_and_an_unpaired_one_cannot(
    devices: Devices,
) -> None:
    serving = devices.serve("alpha")
    beta = export(devices, "beta")
    ok = s_client(devices, serving, beta["cert"], beta["key"], beta["peers"])
    assert ok.returncode == 0, ok.stderr
    body = ok.stdout.strip().splitlines()[-1]  # after the HTTP head
    assert json.loads(body)["peer_fingerprint"] == devices.fp("beta")
    assert serving.next_event()["outcome"] == "accepted"
    gamma_key = str(devices.home("gamma") / "identity" / "key.pem")
    refused = s_client(devices, serving, str(devices.home("gamma") / "identity" / "cert.pem"),
                       gamma_key, beta["peers"])
    assert refused.returncode != 0 and "peer_fingerprint" not in refused.stdout
    assert "alert unknown ca" in refused.stderr
    assert serving.next_event()["reason"] == "not a paired device"
    # -verify_return_error: a bundle without alpha's certificate stops the client.
    wrong_ca = s_client(devices, serving, beta["cert"], beta["key"], beta["cert"])
    assert wrong_ca.returncode != 0 and "verify error" in wrong_ca.stderr


@NEEDS_OPENSSL
def test_openssl_s_server_with_exported_files_accepts_a_paired_library_client(
    devices: Devices,
) -> None:
    assert OPENSSL is not None
    alpha = export(devices, "alpha")
    proc = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", alpha["cert"], "-key",
         alpha["key"], "-CAfile", alpha["peers"], "-Verify", "1", "-verify_return_error",
         "-tls1_3", "-rev", "-naccept", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        while not (accept := re.match(r"ACCEPT 127\.0\.0\.1:(\d+)", lines.next())):
            pass
        port = int(accept.group(1))
        tls, peer = trusted.connect("127.0.0.1", port, devices.home("beta"), timeout=WAIT)
        with tls:
            tls.sendall(b"hello\n")
            assert tls.recv(100) == b"olleh\n"
        assert peer.fingerprint == devices.fp("alpha")
        tls, _ = trusted.connect("127.0.0.1", port, devices.home("gamma"), timeout=WAIT)
        with tls, pytest.raises(OSError):  # noqa: PT011  # an alert, or the connection closes
            tls.sendall(b"hello\n")
            if not tls.recv(100):
                raise ConnectionError("closed")
    finally:
        proc.kill()
        proc.communicate()


@NEEDS_CURL
def test_curl_with_exported_files_gets_json_from_serve_and_an_unpaired_one_does_not(
    devices: Devices,
) -> None:
    assert CURL is not None
    serving = devices.serve("alpha")
    beta = export(devices, "beta")
    dns = beta["devices"][0]["dns_names"][0]  # curl checks the server's name

    def curl(cert: str, key: str) -> subprocess.CompletedProcess[str]:
        assert CURL is not None
        return subprocess.run(
            [CURL, "-sS", "--fail", "--max-time", str(WAIT), "--cert", cert, "--key", key,
             "--cacert", beta["peers"], "--resolve", f"{dns}:{serving.port}:127.0.0.1",
             f"https://{dns}:{serving.port}/"],
            capture_output=True, text=True, timeout=WAIT, check=False)

    ok = curl(beta["cert"], beta["key"])
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"name": "alpha", "fingerprint": devices.fp("alpha"),
                                     "peer": "beta", "peer_fingerprint": devices.fp("beta")}
    gamma = devices.home("gamma") / "identity"
    refused = curl(str(gamma / "cert.pem"), str(gamma / "key.pem"))
    assert refused.returncode != 0 and refused.stdout == ""
    assert [serving.next_event()["outcome"] for _ in range(2)] == ["accepted", "refused"]
