"""The CLI at the edges a person meets: bad numbers and addresses, usual mistakes, the
home directory, with real ``certpair`` processes (no terminal needed; see test_tty.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from certpair.cli.params import parse_host_port
from certpair.cli.terminal import printable
from certpair.errors import BadInput
from certpair.identity import create_identity
from certpair.store import open_store
from tests.cliutil import CLI, Offerer, Proc, cert_fingerprint, certpair_argv, init, run

CAN_MOUNT = os.geteuid() == 0 and shutil.which("unshare") is not None and sys.platform == "linux"


def _run_all(home: Path, cases: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run every argv at once (they are independent) and return their results in order."""
    procs = [subprocess.Popen([*CLI, "--home", str(home), *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
             for argv in cases]
    results = []
    for argv, proc in zip(cases, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


BAD_NUMBERS = [
    ["pair", "--ttl", "inf"], ["pair", "--ttl", "nan"], ["pair", "--ttl", "1e308"],
    ["pair", "--timeout", "nan"], ["pair", "--timeout", "-inf"],
    ["pair", "--mode", "hmac", "--bits", "100000"],
    ["join", "127.0.0.1", "1234-5678-6", "--timeout", "nan"],
    ["join", "1234-5678-6", "--discovery-timeout", "inf"],
    ["discover", "--timeout", "nan"], ["ping", "127.0.0.1", "--timeout", "inf"],
    ["advise", "--risk", "nan"], ["advise", "--mode", "hmac", "--ttl", "inf"],
    ["advise", "--guesses-per-second", "inf"], ["log", "--limit", "1" + "0" * 30],
]


def test_every_number_is_bounded_and_a_bad_one_exits_2_naming_its_option(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    for argv, result in zip(BAD_NUMBERS, _run_all(home, BAD_NUMBERS), strict=True):
        option = next(arg for arg in argv if arg.startswith("--") and arg != "--mode")
        assert result.returncode == 2, (argv, result.stderr)
        assert f"'{option}'" in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text", [
    "1.2.3.4:5:6", "[::1]:", "host:", "[::1]:\u0665\u0663\u0660\u0660\u0660",
    "host:\uff18\uff10", "[::1]x", "a b", "host:0", "host:123456"])
def test_addresses_that_are_not_host_port_are_refused(text: str) -> None:
    with pytest.raises(BadInput):
        parse_host_port(text, 4490)


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 4490)), ("192.0.2.1:5300", ("192.0.2.1", 5300)),
    ("::1", ("::1", 4490)), ("[::1]:5300", ("::1", 5300)), ("[::1]", ("::1", 4490)),
    ("alpha.local:80", ("alpha.local", 80)),
])
def test_addresses_in_every_accepted_form_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, 4490) == expected


MISTAKES = [
    (["join", "1.2.3.4:5:6", "1234-5678-6"], "[IPV6]:PORT"),
    (["join", "[::1]:", "1234-5678-6"], "no port after ':'"),
    (["join", "[::1]:\u0665\u0663\u0660\u0660\u0660", "1234-5678-6"], "ASCII digits"),
    (["join", "192.168.1.20"], "missing the pairing code"),
    (["join", "1234-5678-6", "192.168.1.20"], "the address comes first"),
    (["join", "http://192.168.1.20/", "1234-5678-6"], "certpair://"),
    (["join", "192.168.1.20", "4711", "0815", "3"], "quote the code or drop the spaces"),
    (["join", "1234", "5678", "6"], "quote the code or drop the spaces"),
    (["unpair", "6b2"], "at least 4 hex digits"),
    (["pair", "--ttl", "60", "--timeout", "600"], "--timeout 600 is longer than --ttl 60"),
]


def test_usual_mistakes_exit_2_with_the_hint_that_fixes_them(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    cases = [argv for argv, _ in MISTAKES]
    for (argv, hint), result in zip(MISTAKES, _run_all(home, cases), strict=True):
        assert result.returncode == 2, (argv, result.stderr)
        assert hint in result.stderr, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and "5678" not in result.stderr, result.stderr


def test_advise_cpace_beyond_twelve_digits_suggests_the_hmac_bits_hmac_advice_computes() -> None:
    def advice(*args: str) -> dict[str, object]:
        result = subprocess.run([*CLI, "advise", "--risk", "1e-12", "--json", *args],
                                capture_output=True, text=True, check=True)
        parsed: dict[str, object] = json.loads(result.stdout)
        return parsed

    hmac, cpace = advice("--mode", "hmac"), advice("--mode", "cpace")
    assert str(hmac["option"]).startswith("--mode hmac --bits ")
    assert cpace["option"] == hmac["option"]
    assert int(str(hmac["option"]).rsplit(" ", 1)[1]) > 80  # the default would fall short


def _add_peer(home: Path, name: str, tmp_path: Path) -> None:
    # The identity's own name must pass the name rule; the stored name need not (a store
    # from before the rule may hold any name), and is what the display must escape.
    other = create_identity(tmp_path / f"peer-{name}", "peer")
    with open_store(home) as store:
        store.commit_pairing(name=name, cert_der=other.cert_der, mode="cpace", role="joiner",
                             remote="192.0.2.9:4490")


def test_init_force_over_an_identity_with_peers_needs_yes_off_a_terminal(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    _add_peer(home, "beta", tmp_path)
    before = cert_fingerprint(home)
    refused = run(home, "init", "--force", "--name", "alpha2")
    assert refused.returncode == 2
    assert "1 paired device" in refused.stderr and "pair again" in refused.stderr
    assert "--yes" in refused.stderr
    assert cert_fingerprint(home) == before
    replaced = run(home, "init", "--force", "--yes", "--name", "alpha2")
    assert replaced.returncode == 0, replaced.stderr
    assert cert_fingerprint(home) != before
    # Without peers there is nothing to lose: --force alone replaces.
    empty = tmp_path / "b"
    init(empty, "beta")
    assert run(empty, "init", "--force", "--name", "beta2").returncode == 0


def test_global_options_after_the_command_work_and_hints_keep_the_home(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    shown = subprocess.run([*CLI, "show", "--home", str(home), "--json"], capture_output=True,
                           text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "alpha"
    missing = tmp_path / "nothing here"
    for argv in (["--home", str(missing), "show"], ["show", "--home", str(missing)]):
        nobody = subprocess.run([*CLI, *argv], capture_output=True, text=True, check=False)
        assert nobody.returncode == 5
        assert f"run 'certpair --home '{missing}' init' first" in nobody.stderr


def test_certpair_home_that_is_a_file_exits_5_naming_the_variable(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("not a directory")
    for home in (afile, afile / "below"):
        env = {**os.environ, "CERTPAIR_HOME": str(home)}
        result = subprocess.run([*CLI, "peers"], capture_output=True, text=True, env=env,
                                check=False)
        assert result.returncode == 5, result.stderr
        assert result.stderr.startswith("Error: CERTPAIR_HOME (") and "a file" in result.stderr
        assert "Invalid value" not in result.stderr
    typed = subprocess.run([*CLI, "--home", str(afile), "peers"], capture_output=True, text=True,
                           check=False)
    assert typed.returncode == 2 and "--home" in typed.stderr and "a file" in typed.stderr


@pytest.mark.skipif(not CAN_MOUNT, reason="needs root and unshare to mount a home read-only")
def test_read_only_home_still_lists_and_exports_and_writers_say_why(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    _add_peer(home, "beta", tmp_path)
    out = tmp_path / "out"
    script = (f'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && '
              f'for c in "peers --json" "log --json" "show --json" "export --out {out} --json"'
              f' "pair --port 0 --no-advertise" "unpair beta"; do '
              f'{" ".join(CLI)} --home "$1" $c; echo "rc=$?"; done; '
              f'CERTPAIR_HOME="$1" {" ".join(CLI)} unpair beta; echo "rc=$?"')
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(home), str(home)],
                            capture_output=True, text=True, timeout=60, check=False)
    codes = [line for line in result.stdout.splitlines() if line.startswith("rc=")]
    assert codes == ["rc=0"] * 4 + ["rc=5"] * 3, (result.stdout, result.stderr)
    assert '"name": "beta"' in result.stdout
    assert (out / "peers.pem").read_text().count("BEGIN CERTIFICATE") == 1
    assert result.stderr.count("read-only file system") == 3, result.stderr
    assert result.stderr.splitlines()[-1].endswith("; the home comes from CERTPAIR_HOME")
    assert "Traceback" not in result.stderr


@pytest.fixture
def private_link() -> Iterator[list[str]]:
    """A network namespace of this test's own (only ``lo``), as a command prefix."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip to make a private network namespace")
    ns = f"certpair-ux-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True, check=False).returncode:
        pytest.skip("cannot make a network namespace here")
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_advertisement_with_a_control_character_is_skipped_and_reported_once(
    tmp_path: Path, private_link: list[str]
) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    beacon = subprocess.Popen([*private_link, sys.executable, "-m", "tests.hostile_mdns", "300"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        found = run(home, "discover", "--interface", "127.0.0.1", "--timeout", "2",
                    prefix=private_link)
        joined = run(home, "join", "1234-5678-6", "--interface", "127.0.0.1",
                     "--discovery-timeout", "2", prefix=private_link)
    finally:
        beacon.kill()
        beacon.communicate(timeout=10)
    assert found.returncode == 0, found.stderr
    assert "No device is offering" in found.stdout
    assert joined.returncode == 3 and joined.stderr.startswith("Warning: ignored a malformed")
    for result in (found, joined):
        assert "Traceback" not in result.stderr
        assert result.stderr.count("malformed DNS-SD advertisement") == 1, result.stderr
        assert "\x07" not in result.stderr


# ---------------------------------------------------------------- help and output

COMMANDS = ["init", "show", "pair", "join", "peers", "discover", "serve", "ping", "unpair",
            "rename", "export", "log", "advise", "tunnel serve", "tunnel connect",
            "rotate", "sync"]


def test_every_command_help_has_examples_and_every_option_a_description() -> None:
    from certpair.cli.main import cli

    procs = {name: subprocess.Popen([*CLI, *name.split(), "--help"], stdout=subprocess.PIPE,
                                    text=True) for name in COMMANDS}
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        examples = text.split("Examples:", 1)[1].split("Options:", 1)[0]
        assert examples.count(f"certpair {name}") + examples.count("certpair --home") >= 1, name
        for word in ("RANGE", "FLOAT", "INTEGER", "TEXT", "(default:"):
            assert word not in text, (name, word)
        command: click.Command | None = cli
        for word in name.split():
            assert isinstance(command, click.Group)
            command = command.get_command(click.Context(command), word)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, (name, param.name)


def test_peers_and_log_print_aligned_columns_and_escape_peer_names(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    _add_peer(home, "mallory\u202egpj.exe", tmp_path)
    _add_peer(home, "a-very-long-device-name-that-goes-on-and-on-and-on", tmp_path)
    with open_store(home) as store:
        store.record_event(kind="connection", role="server", remote="192.0.2.7:51000",
                           mode="mtls", outcome="refused", reason="not a paired device")
    shown = run(home, "peers")
    logged = run(home, "log")
    for result, header in ((shown, "NAME"), (logged, "TIME")):
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(header)
        assert "\u202e" not in result.stdout
    peer_lines = shown.stdout.splitlines()
    assert len(peer_lines) == 3
    column = peer_lines[0].index("FINGERPRINT")
    assert all(line[column:].startswith("sha256:") for line in peer_lines[1:])
    assert "mallory\\u202egpj.exe" in shown.stdout
    assert "a-very-long-device-…" in shown.stdout
    assert "goes-on-and-on" not in shown.stdout
    log_lines = logged.stdout.splitlines()
    outcome = log_lines[0].index("OUTCOME")
    assert {line[outcome:].split()[0] for line in log_lines[1:]} == {"paired", "refused"}
    assert "mallory\\u20…" in logged.stdout  # cut to the PEER column
    wide = run(home, "log", "--wide")
    assert "mallory\\u202egpj.exe" in wide.stdout and "\u202e" not in wide.stdout
    assert "a-very-long-device-name…" in run(home, "peers", "--wide").stdout


def test_peers_and_log_fit_80_columns_and_wide_prints_every_field(tmp_path: Path) -> None:
    home = tmp_path / "a"
    init(home, "alpha")
    _add_peer(home, "a-very-long-device-name-that-goes-on-and-on-and-on", tmp_path)
    with open_store(home) as store:
        for role in ("tunnel-server", "tunnel-client"):
            store.record_event(kind="connection", role=role, mode="mtls", outcome="accepted",
                               remote="[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:51000",
                               reason="", peer_name="a-very-long-device-name")
    for command in ("peers", "log"):
        narrow = run(home, command)
        assert narrow.returncode == 0, narrow.stderr
        assert max(len(line) for line in narrow.stdout.splitlines()) <= 80, narrow.stdout
        wide = run(home, command, "--wide")
        assert max(len(line) for line in wide.stdout.splitlines()) > 80
    logged = run(home, "log").stdout
    assert "tunnel, incoming" in logged and "tunnel, outgoing" in logged
    wide_log = run(home, "log", "--wide").stdout
    assert "tunnel-server" in wide_log and "tunnel-client" in wide_log
    fingerprint = run(home, "peers", "--json").stdout.split('"fingerprint": "')[1][:71]
    assert fingerprint in run(home, "peers", "--wide").stdout
    assert fingerprint not in run(home, "peers").stdout


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"), ("a\u202eb", "a\\u202eb"),
    ("zero\u200bwidth", "zero\\u200bwidth"), ("line\u2028break", "line\\u2028break"),
    ("back\\slash", "back\\x5cslash"), ("caf\u00e9 日本", "caf\u00e9 日本"),
    ("\x9b31m", "\\x9b31m"),
])
def test_printable_shows_every_control_escape_and_bidi_character_visibly(
    raw: str, shown: str
) -> None:
    assert printable(raw) == shown


# ---------------------------------------------------------------- feedback without a terminal


def _wrong(code: str) -> str:
    from certpair.codes import damm_check_digit

    body = code.replace("-", "")[:-1]
    body = str((int(body[0]) + 1) % 10) + body[1:]
    return body + str(damm_check_digit(body))


def test_pair_and_join_as_text_off_a_terminal_say_what_happens_line_by_line(
    homes: tuple[Path, Path], offerers: list[Proc],
) -> None:
    a, b = homes
    offerer = Proc(certpair_argv(a, "pair", "--listen", "127.0.0.1", "--port", "0",
                                 "--no-advertise"))
    offerers.append(offerer)
    first = offerer.next_line()
    found = re.fullmatch(r"Pairing code: (\S+)\s+\(expires in \d+:\d\d\)\s+listening on "
                         r"127\.0\.0\.1:(\d+)\n", first)
    assert found, first
    code, port = found.groups()
    assert offerer.next_line() == f"On the other device: certpair join 127.0.0.1:{port} {code}\n"
    wrong = run(b, "join", f"127.0.0.1:{port}", _wrong(code))
    assert wrong.returncode == 1
    # Progress lines are for a terminal (test_tty.py): here only the result.
    assert wrong.stderr.count("\n") == 1 and wrong.stderr.startswith("Error: pairing failed")
    assert "code is now burned and the other device shows a new one" in wrong.stderr
    fresh = re.match(r"New pairing code: (\S+)", offerer.next_line())
    assert fresh is not None and fresh.group(1) != code
    assert fresh.group(1) in offerer.next_line()
    joined = run(b, "join", f"127.0.0.1:{port}", fresh.group(1))
    assert joined.returncode == 0, joined.stderr
    status, _, err = _finish_text(offerer)
    assert status == 0
    assert re.search(rf"Wrong code tried from 127\.0\.0\.1:\d+: code {code} is burned", err)
    assert "\r" not in first and "\x1b" not in first


def _finish_text(proc: Proc) -> tuple[int, list[str], str]:
    status = proc.proc.wait(60)
    rest = []
    while (line := proc.lines.get(timeout=10)) is not None:
        rest.append(line)
    return status, rest, proc.proc.stderr.read() if proc.proc.stderr else ""


def test_join_to_a_serve_port_and_ping_to_a_pairing_port_fail_at_once_and_say_so(
    homes: tuple[Path, Path], offerers: list[Proc],
) -> None:
    a, b = homes
    server = Proc(certpair_argv(a, "serve", "--listen", "127.0.0.1", "--port", "0", "--json"))
    offerers.append(server)
    serve_port = json.loads(server.next_line())["port"]
    offerer = Offerer(a, advertise=False)
    offerers.append(offerer)
    # Generous timeouts: without the ALPN check these would wait them out (exit 3).
    joined = run(b, "join", f"127.0.0.1:{serve_port}", offerer.code, "--timeout", "60")
    pinged = run(b, "ping", offerer.address, "--timeout", "60")
    assert joined.returncode == 4, joined.stderr
    assert "is a trusted certpair port" in joined.stderr and "not a pairing port" in joined.stderr
    assert pinged.returncode == 4, pinged.stderr
    assert "is a certpair pairing port" in pinged.stderr and "4491" in pinged.stderr
    # The offer is untouched: the right joiner still pairs with it.
    assert run(b, "join", offerer.address, offerer.code).returncode == 0


def test_a_join_that_times_out_names_the_stage_it_stopped_in(tmp_path: Path) -> None:
    home = tmp_path / "b"
    init(home, "beta")
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        result = run(home, "join", f"127.0.0.1:{port}", "1234-5678-6", "--timeout", "1")
    assert result.returncode == 3
    assert "timed out during the TLS handshake" in result.stderr
    assert "not a certpair offerer" in result.stderr


def test_join_to_a_tunnel_port_fails_at_once_and_says_so(
    homes: tuple[Path, Path], offerers: list[Proc],
) -> None:
    a, b = homes
    with socket.create_server(("127.0.0.1", 0)) as service:
        tunnel = Proc(certpair_argv(a, "tunnel", "serve", "--to",
                                    f"127.0.0.1:{service.getsockname()[1]}", "--listen",
                                    "127.0.0.1", "--port", "0", "--json"))
        offerers.append(tunnel)
        port = json.loads(tunnel.next_line())["port"]
        joined = run(b, "join", f"127.0.0.1:{port}", "1234-5678-6", "--timeout", "60")
    assert joined.returncode == 4, joined.stderr
    assert "is a trusted certpair port" in joined.stderr
