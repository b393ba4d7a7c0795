"""Secrets stay secret: no code, key, K or ISK in the store, errors, output or logs.

The secrets looked for are every code or key shown or typed, and the CPace values
derived from the code during the run: K (the shared point), ISK and the confirmation
key. The latter are read with a pass-through recorder around the real functions of
``certpair.protocol.cpace`` (behaviour unchanged), since nothing else exposes them.

And private keys: created 0600 under a permissive and a restrictive umask, and never
seen with group or other permission bits by a thread polling the directory while
identities are being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from certpair.codes import (
    Mode,
    Secret,
    damm_check_digit,
    generate_code,
    generate_hmac_key,
    parse_secret,
)
from certpair.errors import CertpairError
from certpair.identity import Identity, create_identity
from certpair.net import OfferEvent, run_join
from certpair.protocol import cpace
from certpair.protocol.frames import FrameType, encode_frame
from certpair.store import TrustStore
from tests.attacks.mitm import LOOPBACK, WAIT, Leg, client_tls, connect_leg, hostile_server
from tests.attacks.mitm import server_tls as mallory_server_tls
from tests.netutil import running_offer

Device = tuple[Identity, TrustStore]
MakeDevice = Callable[[str], Device]
T = TypeVar("T")

CLI = [sys.executable, "-m", "certpair"]


def secret_forms(secret: Secret) -> set[bytes]:
    """Every spelling of a secret that would count as leaking it."""
    compact = secret.display.replace("-", "")
    return {secret.value, secret.value.hex().encode(), secret.value.hex().upper().encode(),
            secret.display.encode(), compact.encode()}


def derived_forms(values: list[bytes]) -> set[bytes]:
    return {form for value in values for form in (value, value.hex().encode())}


def assert_absent(haystack: bytes | str, needles: set[bytes], where: str) -> None:
    data = haystack.encode("utf-8", "backslashreplace") if isinstance(haystack, str) else haystack
    for needle in needles:
        assert needle not in data, f"a secret ({len(needle)} bytes) appears in {where}"


def wrong_code(code: str) -> str:
    body = code.replace("-", "")[:-1]
    body = str((int(body[0]) + 1) % 10) + body[1:]
    return body + str(damm_check_digit(body))


def error_texts(error: BaseException) -> str:
    """str and repr of an error and of everything chained to it, and its traceback."""
    texts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    texts += traceback.format_exception(error)
    return "\n".join(texts)


@pytest.fixture
def derived(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record K, ISK and the confirmation key as the real cpace functions return them."""
    seen: list[bytes] = []
    for name in ("shared_point", "intermediate_session_key", "confirmation_key"):
        real: Callable[..., bytes] = getattr(cpace, name)

        def recorder(*args: Any, _real: Callable[..., bytes] = real) -> bytes:
            value = _real(*args)
            seen.append(value)
            return value

        monkeypatch.setattr(cpace, name, recorder)
    return seen


async def expect_error(awaitable: Awaitable[T], errors: list[BaseException]) -> None:
    with pytest.raises(CertpairError) as info:
        await asyncio.wait_for(awaitable, WAIT)
    errors.append(info.value)


async def run_failure_paths(make_device: MakeDevice, mode: Mode, shown: list[Secret],
                            typed: list[Secret], errors: list[BaseException],
                            reported: list[OfferEvent]) -> list[Device]:
    """Pair once, then walk every way a pairing can fail, collecting what was raised."""
    alpha, beta, mallory = make_device("alpha"), make_device("beta"), make_device("mallory")

    async def join(device: Device, port: int, secret: Secret) -> None:
        typed.append(secret)
        await run_join(identity=device[0], store=device[1], host=LOOPBACK, port=port,
                       secret=secret, timeout=5)

    # Success.
    async with running_offer(*alpha, mode) as offer:
        shown.append(parse_secret(offer.listening.code))
        await join(beta, offer.listening.port, shown[-1])
        reported.append(await offer.next_event())
    # A wrong secret: both sides fail.
    gamma = make_device("gamma")
    async with running_offer(*gamma, mode, once=True) as offer:
        shown.append(parse_secret(offer.listening.code))
        wrong = (parse_secret(wrong_code(offer.listening.code)) if mode is Mode.CPACE
                 else generate_hmac_key())
        await expect_error(join(mallory, offer.listening.port, wrong), errors)
        await expect_error(offer.task, errors)
        reported += [offer.events.get_nowait() for _ in range(offer.events.qsize())]
    # The other mode's secret; an expired secret; a busy offerer.
    delta = make_device("delta")
    now = [1000.0]
    async with running_offer(*delta, mode, ttl=60, clock=lambda: now[0]) as offer:
        shown.append(parse_secret(offer.listening.code))
        other = generate_hmac_key() if mode is Mode.CPACE else generate_code()
        await expect_error(join(mallory, offer.listening.port, other), errors)
        if mode is Mode.CPACE:
            holder = await connect_leg(client_tls(mallory[0]), offer.listening.port)
            await holder.send_frame(encode_frame(FrameType.CPACE_SHARE_A, b"\x09" * 32 + b"m"))
            await holder.read_frame()  # Yb || Tb: the claim is held
            await expect_error(join(beta, offer.listening.port, shown[-1]), errors)
            await holder.close()
            reported.append(await offer.next_event())
        now[0] += 61
        await expect_error(join(beta, offer.listening.port, shown[-1]), errors)

    # A hostile offerer answering nonsense.
    async def nonsense(leg: Leg) -> None:
        await leg.read_frame()
        await leg.send_frame(encode_frame(FrameType.HMAC_RESPONSE, b"\x00" * 33))
        await leg.read_until_closed()

    async with hostile_server(mallory_server_tls(mallory[0]), nonsense) as srv:
        await expect_error(join(beta, srv.port, generate_code() if mode is Mode.CPACE
                                else generate_hmac_key()), errors)
    return [alpha, beta, gamma, delta, mallory]


@pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC], ids=["cpace", "hmac"])
async def test_no_secret_reaches_the_store_errors_event_reprs_or_logs(
    make_device: MakeDevice, derived: list[bytes], caplog: pytest.LogCaptureFixture,
    mode: Mode,
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[Secret] = []
    typed: list[Secret] = []
    errors: list[BaseException] = []
    reported: list[OfferEvent] = []
    devices = await run_failure_paths(make_device, mode, shown, typed, errors, reported)

    needles = set().union(*(secret_forms(s) for s in shown + typed))
    if mode is Mode.CPACE:
        assert derived, "the recorder saw no CPace run"
        needles |= derived_forms(derived)
    assert len(errors) >= 5
    for error in errors:
        assert_absent(error_texts(error), needles, f"the error {type(error).__name__}")
    for event in reported:
        assert_absent(repr(event), needles, f"repr of {type(event).__name__}")
    for secret in shown + typed:
        assert_absent(repr(secret), needles, "repr of a Secret")
    for record in caplog.records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        if record.exc_info and record.exc_info[1] is not None:
            text += error_texts(record.exc_info[1])
        assert_absent(text, needles, f"a log record of {record.name}")
    for identity, store in devices:
        home = identity.cert_path.parent.parent
        assert store.events(), "every device took part in something"
        for path in home.glob("trust.db*"):
            assert_absent(path.read_bytes(), needles, path.name)


# -- the command line ---------------------------------------------------------------------


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def no_advertising() -> list[str]:
    """Keep the offerer off the network where the CLI can advertise itself."""
    from certpair.cli.pair_cmd import command

    return ["--no-advertise"] if any("--no-advertise" in p.opts for p in command.params) else []


@contextlib.contextmanager
def offerer_process(
    home: Path, mode: str
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    proc = subprocess.Popen(
        [*CLI, "--home", str(home), "pair", "--json", "--listen", "127.0.0.1", "--port", "0",
         "--mode", mode, "--once", *no_advertising()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        listening: dict[str, Any] = json.loads(proc.stdout.readline())
        assert listening["event"] == "listening"
        yield proc, listening
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("mode", ["cpace", "hmac"])
@pytest.mark.parametrize("right", [True, False], ids=["right_secret", "wrong_secret"])
def test_no_secret_in_joiner_json_output_or_either_stderr(
    tmp_path: Path, mode: str, right: bool
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    create_identity(a, "alpha")
    create_identity(b, "beta")
    with offerer_process(a, mode) as (proc, listening):
        code = listening["code"]
        typed = code if right else (wrong_code(code) if mode == "cpace"
                                     else generate_hmac_key().display)
        extra = [] if right else ["--traceback"]
        joined = cli(b, *extra, "join", f"127.0.0.1:{listening['port']}", typed, "--json")
        out, err = proc.communicate(timeout=30)
    assert (joined.returncode == 0) is right, joined.stderr
    needles = secret_forms(parse_secret(code)) | secret_forms(parse_secret(typed))
    assert_absent(joined.stdout, needles, "the joiner's --json output")
    assert_absent(joined.stderr, needles, "the joiner's stderr")
    assert_absent(err, needles, "the offerer's stderr")
    # The offerer shows its own code once, in its listening event; nowhere else.
    later = [line for line in out.splitlines() if json.loads(line)["event"] != "listening"]
    assert later, "the offerer reported the outcome"
    assert_absent("\n".join(later), needles, "the offerer's later output")
    for path in [*a.glob("trust.db*"), *b.glob("trust.db*")]:
        assert_absent(path.read_bytes(), needles, f"{path.parent.name}/{path.name}")


# -- private key files ---------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])
def test_private_key_file_is_never_readable_by_group_or_others_even_while_written(
    tmp_path: Path, umask: int
) -> None:
    home = tmp_path / "home"
    identity_dir = home / "identity"
    stop = threading.Event()
    key_modes: dict[str, set[int]] = {}

    def observe() -> None:
        while not stop.is_set():
            try:
                entries = list(os.scandir(identity_dir))
            except FileNotFoundError:
                continue
            for entry in entries:
                if "key" not in entry.name:
                    continue
                try:
                    mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    continue
                key_modes.setdefault(entry.name, set()).add(mode)

    observer = threading.Thread(target=observe)
    old = os.umask(umask)
    try:
        observer.start()
        for _ in range(60):
            identity = create_identity(home, "device", force=True)
    finally:
        stop.set()
        observer.join()
        os.umask(old)
    assert "key.pem" in key_modes, "the observer never saw the key file"
    leaky = {name: sorted(oct(m) for m in modes) for name, modes in key_modes.items()
             if any(m & 0o077 for m in modes)}
    assert not leaky
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    for directory in (home, identity_dir):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
