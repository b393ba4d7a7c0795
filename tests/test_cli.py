"""End to end: real ``certpair`` processes pairing over loopback sockets."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from certpair.codes import damm_check_digit
from tests.cliutil import CLI, Offerer, cert_fingerprint, peers, run


@pytest.mark.parametrize("mode", ["cpace", "hmac"])
def test_two_processes_pair_and_stores_hold_each_others_certificate(
    homes: tuple[Path, Path], mode: str
) -> None:
    a, b = homes
    offerer = Offerer(a, "--mode", mode, advertise=False)
    try:
        joined = run(b, "join", offerer.address, offerer.listening["code"], "--json")
        code, events, _ = offerer.finish()
    finally:
        offerer.kill()
    assert joined.returncode == 0, joined.stderr
    assert code == 0
    assert json.loads(joined.stdout)["peer"]["fingerprint"] == cert_fingerprint(a)
    assert events[-1] == {"event": "paired",
                          "peer": {"name": "beta", "fingerprint": cert_fingerprint(b)}}
    assert [(p["name"], p["fingerprint"], p["mode"]) for p in peers(a)] == [
        ("beta", cert_fingerprint(b), mode)]
    assert [(p["name"], p["fingerprint"], p["mode"]) for p in peers(b)] == [
        ("alpha", cert_fingerprint(a), mode)]


def _wrong(code: str) -> str:
    body = code.replace("-", "")[:-1]
    body = str((int(body[0]) + 1) % 10) + body[1:]
    return body + str(damm_check_digit(body))


def test_wrong_code_exits_1_on_both_sides_and_stores_nothing(homes: tuple[Path, Path]) -> None:
    a, b = homes
    offerer = Offerer(a, "--once", advertise=False)
    try:
        joined = run(b, "join", offerer.address, _wrong(offerer.listening["code"]))
        code, events, _ = offerer.finish()
    finally:
        offerer.kill()
    assert (joined.returncode, code) == (1, 1)
    assert joined.stderr.startswith("Error: pairing failed") and "Traceback" not in joined.stderr
    assert [e["event"] for e in events] == ["failed"]  # exactly one, with --once
    assert events[0]["burned"] is True
    assert peers(a) == [] and peers(b) == []
    result = subprocess.run([*CLI, "--home", str(a), "--traceback", "show"], capture_output=True,
                            text=True, check=True)
    assert "alpha" in result.stdout
    import sqlite3

    with sqlite3.connect(a / "trust.db") as db:
        rows = db.execute("SELECT outcome, reason FROM events").fetchall()
    # the log says what it cost: one row, in words (issue 24)
    assert rows == [("failed", "wrong code (or a tampered connection); the code is burned")]


def test_wrong_code_reports_failed_then_a_fresh_code_that_pairs(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    offerer = Offerer(a, advertise=False)
    try:
        old = offerer.listening["code"]
        wrong = run(b, "join", offerer.address, _wrong(old))
        failed, fresh = offerer.next_event(), offerer.next_event()
        stale = run(b, "join", offerer.address, old)  # the right code, but burned
        assert offerer.next_event()["event"] == "failed"  # that was a guess too
        fresher = offerer.next_event()
        joined = run(b, "join", offerer.address, fresher["code"])
        status, rest, _ = offerer.finish()
    finally:
        offerer.kill()
    assert wrong.returncode == 1
    assert failed["event"] == "failed" and failed["burned"] is True
    assert fresh["event"] == "listening" and fresh["code"] != old
    assert fresh["port"] == offerer.listening["port"]
    assert stale.returncode == 1
    assert joined.returncode == 0 and status == 0
    assert rest[-1]["event"] == "paired"
    assert [p["name"] for p in peers(a)] == ["beta"]


def test_typo_is_caught_before_connecting_and_code_stays_valid(homes: tuple[Path, Path]) -> None:
    a, b = homes
    offerer = Offerer(a, advertise=False)
    try:
        good = offerer.listening["code"]
        digits = good.replace("-", "")
        typo = digits[:-1] + str((int(digits[-1]) + 1) % 10)
        typed = run(b, "join", offerer.address, typo)
        joined = run(b, "join", offerer.address, good)
        code, _, _ = offerer.finish()
    finally:
        offerer.kill()
    assert typed.returncode == 2 and "check digit" in typed.stderr
    assert joined.returncode == 0 and code == 0


def test_offerer_whose_code_expires_unused_exits_3(homes: tuple[Path, Path]) -> None:
    a, _ = homes
    offerer = Offerer(a, "--ttl", "1", advertise=False)
    code, events, err = offerer.finish()
    assert code == 3 and events[-1]["event"] == "failed" and "expired" in err


def test_joiner_with_nobody_listening_exits_4(homes: tuple[Path, Path]) -> None:
    _, b = homes
    result = run(b, "join", "127.0.0.1:1", "1234-5678-6", "--timeout", "5")
    assert result.returncode == 4 and result.stderr.startswith("Error: cannot reach")


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["join", "127.0.0.1", "12345"], 2),  # too short for a code
        (["join", "127.0.0.1", "abc"], 2),
        (["join", "1234-5678-6", "--no-discovery"], 2),  # no host, discovery off
        (["join", "127.0.0.1:99999", "1234-5678-6"], 2),
        (["pair", "--digits", "5"], 2),
        (["pair", "--mode", "hmac", "--bits", "63"], 2),
        (["pair", "--mode", "des"], 2),
    ],
)
def test_bad_input_exits_2_without_traceback(
    homes: tuple[Path, Path], args: list[str], status: int
) -> None:
    _, b = homes
    result = run(b, *args)
    assert result.returncode == status
    assert "Traceback" not in result.stderr and result.stderr.strip()


def test_uninitialised_home_exits_5(tmp_path: Path) -> None:
    for args in (["show"], ["pair"], ["join", "127.0.0.1", "1234-5678-6"]):
        result = run(tmp_path / "empty", *args)
        assert result.returncode == 5, (args, result.stderr)
        assert "init' first" in result.stderr and "certpair --home" in result.stderr


def test_init_refuses_to_overwrite_without_force(homes: tuple[Path, Path]) -> None:
    a, _ = homes
    before = cert_fingerprint(a)
    assert run(a, "init", "--name", "x").returncode == 5
    assert cert_fingerprint(a) == before
    assert run(a, "init", "--name", "x", "--force").returncode == 0
    assert cert_fingerprint(a) != before


def test_show_json_reports_name_fingerprint_and_cert_path(homes: tuple[Path, Path]) -> None:
    a, _ = homes
    shown = json.loads(run(a, "show", "--json").stdout)
    assert shown == {"name": "alpha", "fingerprint": cert_fingerprint(a),
                     "cert_path": str(a / "identity" / "cert.pem")}


def test_home_comes_from_environment(tmp_path: Path) -> None:
    env = {**os.environ, "CERTPAIR_HOME": str(tmp_path / "env-home")}
    subprocess.run([*CLI, "init", "--name", "envy"], env=env, check=True, capture_output=True)
    assert (tmp_path / "env-home" / "identity" / "key.pem").exists()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_key_file_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "h"
    old = os.umask(umask)
    try:
        subprocess.run([*CLI, "--home", str(home), "init"], check=True, capture_output=True)
    finally:
        os.umask(old)
    mode = stat.S_IMODE((home / "identity" / "key.pem").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((home / "identity").stat().st_mode) & 0o077 == 0


def test_secret_read_from_stdin_stays_out_of_argv(homes: tuple[Path, Path]) -> None:
    a, b = homes
    offerer = Offerer(a, advertise=False)
    try:
        code = offerer.listening["code"]
        joined = subprocess.run([*CLI, "--home", str(b), "join", offerer.address, "-"],
                                input=code + "\n", capture_output=True, text=True, timeout=60,
                                check=False)
        status, _, _ = offerer.finish()
    finally:
        offerer.kill()
    assert joined.returncode == 0, joined.stderr
    assert status == 0
    assert [p["name"] for p in peers(b)] == ["alpha"]
