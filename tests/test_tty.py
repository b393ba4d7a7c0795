"""The interactive CLI in a real terminal (tmux): the live countdown, the ready-to-type
line, the burned-code screen, prompts without echo, confirmation before unpairing all.
The same flows without a terminal are in test_cli_ux.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpair.codes import damm_check_digit
from certpair.identity import create_identity
from certpair.store import open_store
from tests.cliutil import Offerer, Proc, cert_fingerprint, certpair_argv, run
from tests.tty import TMUX, Terminal

pytestmark = pytest.mark.skipif(TMUX is None, reason="needs tmux (Debian: apt install tmux)")

LAN_ADDRESS = "192.0.2.77"
_LISTENING = re.compile(r"Pairing code: (\S+)\s+listening on 0\.0\.0\.0:(\d+)")
_COUNTDOWN = re.compile(r"Expires in (\d+:\d\d)")


def _wrong(code: str) -> str:
    body = code.replace("-", "")[:-1]
    body = str((int(body[0]) + 1) % 10) + body[1:]
    return body + str(damm_check_digit(body))


@pytest.fixture
def lan() -> Iterator[list[str]]:
    """A network namespace of this test's own with one LAN address, as a command prefix."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip to make a network namespace with a LAN address")
    ns = f"certpair-tty-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True, check=False).returncode:
        pytest.skip("cannot make a network namespace here")
    try:
        # A veth pair with both ends inside: an interface with a LAN address, no way out.
        for command in (["link", "set", "lo", "up"],
                        ["link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
                        ["addr", "add", f"{LAN_ADDRESS}/24", "dev", "lan0"],
                        ["link", "set", "lan0", "up"], ["link", "set", "lan1", "up"]):
            subprocess.run(["ip", "-n", ns, *command], check=True, capture_output=True)
        yield ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.close()


def test_pair_on_a_terminal_counts_down_in_place_and_shows_burned_and_new_codes(
    homes: tuple[Path, Path], lan: list[str], terminals: list[Terminal], tmp_path: Path,
) -> None:
    a, b = homes
    term = Terminal(tmp_path, certpair_argv(a, "pair", "--port", "0", "--no-advertise",
                                            prefix=lan))
    terminals.append(term)
    shown = term.wait_for(lambda s: bool(_COUNTDOWN.search(s)), "the countdown")
    found = _LISTENING.search(shown)
    assert found, shown
    code, port = found.group(1), found.group(2)
    assert f"On the other device: certpair join {LAN_ADDRESS}:{port} {code}" in shown
    before = _COUNTDOWN.search(shown)
    assert before is not None
    # The countdown moves, in place: one status line, never a scrolled copy of it.
    ticked = term.wait_for(lambda s: (m := _COUNTDOWN.search(s)) is not None
                           and m.group(1) != before.group(1), "the countdown to tick")
    assert ticked.count("Expires in") == 1 and term.history().count("Expires in") == 1
    assert ticked.splitlines()[0].startswith("Pairing code: ")

    wrong = run(b, "join", f"127.0.0.1:{port}", _wrong(code), prefix=lan)
    assert wrong.returncode == 1
    assert "that code is now burned and the other device shows a new one" in wrong.stderr
    shown = term.wait_for(lambda s: "New pairing code:" in s, "a new code")
    assert re.search(rf"Wrong code tried from 127\.0\.0\.1:\d+: code {code} is burned", shown)
    fresh = re.search(r"New pairing code: (\S+)", shown)
    assert fresh is not None and fresh.group(1) != code
    assert f"certpair join {LAN_ADDRESS}:{port} {fresh.group(1)}" in shown
    assert term.history().count("Expires in") == 1

    joined = run(b, "join", f"127.0.0.1:{port}", fresh.group(1), prefix=lan)
    assert joined.returncode == 0, joined.stderr
    assert term.exit_status() == 0
    final = term.screen()
    assert "Paired with beta" in final and "Expires in" not in final


def test_join_dash_on_a_terminal_asks_for_the_code_without_echo(
    homes: tuple[Path, Path], offerers: list[Proc], terminals: list[Terminal], tmp_path: Path,
) -> None:
    a, b = homes
    offerer = Offerer(a, advertise=False)
    offerers.append(offerer)
    term = Terminal(tmp_path, certpair_argv(b, "join", offerer.address, "-"))
    terminals.append(term)
    term.wait_for(lambda s: "Pairing code (not shown):" in s, "the prompt")
    term.type(offerer.code)
    term.wait_for(lambda s: "Paired with alpha" in s, "the pairing")
    assert term.exit_status() == 0
    history = term.history()
    assert offerer.code not in history and offerer.code.replace("-", "") not in history
    assert "Connecting to" in history and "Proving the code" in history


def _home_with_a_peer(tmp_path: Path) -> Path:
    home = tmp_path / "a"
    create_identity(home, "alpha")
    other = create_identity(tmp_path / "b", "beta")
    with open_store(home) as store:
        store.commit_pairing(name="beta", cert_der=other.cert_der, mode="cpace", role="joiner",
                             remote="192.0.2.9:4490")
    return home


@pytest.mark.parametrize(("answer", "status", "replaced"), [("n", 2, False), ("y", 0, True)])
def test_init_force_on_a_terminal_asks_before_replacing_an_identity_with_peers(
    tmp_path: Path, terminals: list[Terminal], answer: str, status: int, replaced: bool,
) -> None:
    home = _home_with_a_peer(tmp_path)
    before = cert_fingerprint(home)
    term = Terminal(tmp_path, certpair_argv(home, "init", "--force", "--name", "alpha2"))
    terminals.append(term)
    shown = term.wait_for(lambda s: "Replace the identity? [y/N]" in s, "the question")
    assert "1 paired device" in shown and "must pair again" in shown
    term.type(answer)
    assert term.exit_status() == status
    assert (cert_fingerprint(home) != before) is replaced


def test_join_on_a_terminal_says_it_is_looking_before_it_says_none_was_found(
    homes: tuple[Path, Path], lan: list[str], terminals: list[Terminal], tmp_path: Path,
) -> None:
    _, b = homes
    term = Terminal(tmp_path, certpair_argv(b, "join", "1234-5678-6", "--discovery-timeout",
                                            "1", prefix=lan))
    terminals.append(term)
    assert term.exit_status() == 3
    lines = term.history().splitlines()  # tmux's "Pane is dead" line may scroll the screen
    assert lines[0] == "Looking for offerers on the local network…"
    assert lines[1].startswith("Error: no device offering cpace pairing was found")


@pytest.mark.parametrize(("height", "fits"), [(24, True), (20, False)])
def test_pair_qr_on_80_columns_keeps_the_code_and_countdown_on_screen_or_says_why(
    homes: tuple[Path, Path], terminals: list[Terminal], tmp_path: Path, height: int,
    fits: bool,
) -> None:
    a, _ = homes
    term = Terminal(tmp_path, certpair_argv(a, "pair", "--qr", "--listen", "127.0.0.1",
                                            "--port", "0", "--no-advertise"),
                    width=80, height=height, env={"LINES": str(height)})
    # LINES: tmux may start the command before the pane takes its final height
    terminals.append(term)
    shown = term.wait_for(lambda s: bool(_COUNTDOWN.search(s)), "the countdown")
    lines = shown.rstrip("\n").splitlines()
    assert any(line.startswith("Pairing code: ") for line in lines), shown
    assert any(line.startswith("On the other device: certpair join") for line in lines)
    assert "Expires in" in lines[-1]
    said = "The terminal is too small for the QR code" in term.history()
    assert said is not fits, term.history()
