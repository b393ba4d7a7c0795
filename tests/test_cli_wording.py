"""One wording per cause, across commands, with the next step (issue 24): a port in use,
nothing listening, something that is not TLS, a command run before ``init``, a port
typed as a word of its own. Real processes over loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.codes import generate_code
from certpair.store import open_store
from tests.cliutil import LOOPBACK, Offerer, Proc, certpair_argv, init, run


@pytest.fixture
def home(tmp_path: Path) -> Path:
    made = tmp_path / "alpha"
    init(made, "alpha")
    return made


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.create_server((LOOPBACK, 0)) as holder:
        yield holder.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("argv", [
    ("pair", "--listen", LOOPBACK, "--no-advertise", "--port"),
    ("serve", "--listen", LOOPBACK, "--port"),
    ("tunnel", "serve", "--to", "127.0.0.1:9", "--listen", LOOPBACK, "--port"),
])
def test_a_port_in_use_reads_the_same_in_every_listener_and_suggests_port(
        home: Path, taken_port: int, argv: tuple[str, ...]) -> None:
    result = run(home, *argv, str(taken_port), timeout=30)
    assert result.returncode == 4, result.stderr
    assert (f"Error: cannot listen on {LOOPBACK}:{taken_port}: the port is already in use "
            "(another program, or another certpair command); choose another with --port"
            ) in result.stderr, result.stderr
    assert "Errno" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [("join", "{addr}", "{code}"), ("ping", "{addr}")])
def test_nothing_listening_reads_the_same_for_join_and_ping_without_internals(
        home: Path, closed_port: int, argv: tuple[str, ...]) -> None:
    address = f"{LOOPBACK}:{closed_port}"
    code = generate_code().display
    result = run(home, *(a.format(addr=address, code=code) for a in argv), timeout=30)
    assert result.returncode == 4, result.stderr
    assert (f"cannot reach {address}: nothing is listening on that port; check the address "
            "and port, and that certpair is running on the other device") in result.stderr
    assert "Connect call failed" not in result.stderr and "(" not in result.stderr


def test_ping_to_something_that_is_not_tls_says_so(home: Path) -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]

        def answer_in_plain_text() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_in_plain_text, daemon=True)
        thread.start()
        result = run(home, "ping", f"{LOOPBACK}:{port}", timeout=30)
        thread.join(10)
    assert result.returncode == 4, result.stderr
    assert "does not speak TLS: it is not a certpair port; check the port" in result.stderr
    assert "WRONG_VERSION_NUMBER" not in result.stderr


@pytest.mark.parametrize("command", [("peers",), ("log",), ("unpair", "beta"), ("export",)])
def test_store_commands_before_init_say_run_init_first(tmp_path: Path,
                                                       command: tuple[str, ...]) -> None:
    empty = tmp_path / "nothing-here"
    result = run(empty, *command)
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip() == (
        f"Error: no identity in {empty}; run 'certpair --home {empty} init' first")
    assert not empty.exists(), "a command before init must not create the home"


def test_join_host_port_code_suggests_host_colon_port(home: Path) -> None:
    for host, shown in (("192.0.2.1", "192.0.2.1"), ("fe80::1", "[fe80::1]")):
        result = run(home, "join", host, "4490", generate_code().display)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (
            f"Error: the port goes with the address, after a colon: join {shown}:4490 CODE")


def test_serve_with_no_paired_device_says_nobody_can_connect_yet(home: Path,
                                                                 tmp_path: Path) -> None:
    lonely = Proc(certpair_argv(home, "serve", "--listen", LOOPBACK, "--port", "0", "--json"))
    try:
        assert lonely.next_event()["event"] == "listening"
        note = lonely.next_event()
        assert note["event"] == "note" and "No device is paired yet" in note["text"]
        assert "certpair --home" in note["text"] and "pair'" in note["text"]
    finally:
        lonely.kill()
    beta = tmp_path / "beta"
    init(beta, "beta")
    with open_store(home) as store:
        store.commit_pairing(name="beta", cert_der=_der(beta), mode="cpace", role="offerer",
                             remote="test")
    with open_store(beta) as store:
        store.commit_pairing(name="alpha", cert_der=_der(home), mode="cpace", role="joiner",
                             remote="test")
    served = Proc(certpair_argv(home, "serve", "--listen", LOOPBACK, "--port", "0", "--json"))
    try:
        port = served.next_event()["port"]
        assert run(beta, "ping", f"{LOOPBACK}:{port}").returncode == 0
        assert served.next_event()["event"] == "connection"  # no note came before it
    finally:
        served.kill()


def _der(home: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = (home / "identity" / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def test_a_pairing_is_one_log_row_on_each_side_in_words(home: Path, tmp_path: Path) -> None:
    beta = tmp_path / "beta"
    init(beta, "beta")
    offerer = Offerer(home, advertise=False)
    try:
        assert run(beta, "join", offerer.address, offerer.code).returncode == 0
        assert offerer.finish()[0] == 0
    finally:
        offerer.kill()
    for side in (home, beta):
        rows = [json.loads(line) for line in run(side, "log", "--json").stdout.splitlines()]
        pairing = [r for r in rows if r["kind"] == "pairing"]
        assert len(pairing) == 1, pairing  # not "paired (unconfirmed)" then "confirmed"
        assert pairing[0]["outcome"] == "paired"
        assert "unconfirmed" not in pairing[0]["reason"], pairing


def test_counts_read_as_english_and_tunnel_connect_lines_name_the_local_client() -> None:
    from certpair.cli.tunnel_cmd import _as_text
    from certpair.errors import counted

    assert [counted(n, "device") for n in (0, 1, 2)] == ["0 devices", "1 device", "2 devices"]
    stopping = {"event": "stopping", "open": 1, "drain_timeout": 5}
    assert _as_text(stopping, serving=True) == "Stopping: draining 1 connection (at most 5 s)"
    opened = {"event": "opened", "id": 3, "remote": "127.0.0.1:50000",
              "peer": {"name": "laptop", "fingerprint": "sha256:00"}}
    assert _as_text(opened, serving=True) == "#3 laptop from 127.0.0.1:50000: open"
    assert _as_text(opened, serving=False) == "#3 local client 127.0.0.1:50000 to laptop: open"


def test_rotate_status_prints_aligned_columns(home: Path, tmp_path: Path) -> None:
    for name in ("beta", "a-much-longer-peer-name"):
        other = tmp_path / name
        init(other, name)
        with open_store(home) as store:
            store.commit_pairing(name=name, cert_der=_der(other), mode="cpace",
                                 role="offerer", remote="test")
    assert run(home, "rotate").returncode == 0
    shown = run(home, "rotate", "--status").stdout.splitlines()
    header = next(line for line in shown if "FINGERPRINT" in line)
    rows = [line for line in shown if line.startswith("  not learned")]
    assert len(rows) == 2
    column = header.index("FINGERPRINT")
    assert all(row[column:].startswith("sha256:") for row in rows), shown
    assert shown[-1] == "0 of 2 peers have learned it."


def test_an_unreachable_relay_says_to_check_the_relay_not_the_device(
    home: Path, closed_port: int,
) -> None:
    result = run(home, "pair", "--port", "0", "--listen", LOOPBACK, "--no-advertise",
                 "--relay", f"tcp:{LOOPBACK}:{closed_port}", "--json", "--ttl", "1")
    # (the offer keeps trying the relay until its code expires; its retry line says why)
    reasons = [json.loads(line).get("reason", "") for line in result.stdout.splitlines()]
    said = next(r for r in reasons if "cannot reach the relay" in r)
    assert "the relay is running there" in said, said
    assert "certpair is running on the other device" not in said


def test_a_name_that_is_neither_a_peer_nor_a_host_says_so_exit_2(home: Path) -> None:
    try:  # the machine's resolver must be able to say "no such name" (EAI_NONAME)
        socket.getaddrinfo("nosuchpeer.invalid", 1)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            pytest.skip("this machine's resolver cannot answer (EAI_AGAIN): exit 4 is right")
    result = run(home, "ping", "nosuchpeer.invalid", "--timeout", "2")
    assert result.returncode == 2, result.stderr  # bad input: it names nothing
    assert "neither a paired device nor a host name that resolves" in result.stderr
    assert "unknown error" not in result.stderr
