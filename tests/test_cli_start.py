"""What ``certpair`` loads to start: a count test, not a timing (the times are in
``scripts/bench``, ``cli_*_ms``). Each command's module loads only when that command
runs (or for ``--help``), and the crypto stack, the store and the event loop only when
a command needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from certpair.cli import main as cli_main
from certpair.cli.main import COMMANDS, cli
from tests.cliutil import LOOPBACK, Proc
from tests.tunnelutil import Devices, Service, dial, echo, make_devices

# Heavy modules no start-up path may load: what issue 23 found costing ~60 ms.
_NEVER_AT_START = ("cryptography", "OpenSSL", "ssl", "sqlite3", "asyncio", "zeroconf",
                   "segno", "certpair.store", "certpair.identity", "certpair.trusted",
                   "certpair.net", "certpair.tunnel", "certpair.rotation", "logging")

_PROBE = """
import json, sys
from certpair.cli.main import main
sys.argv = ["certpair", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def _loaded(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                         text=True, check=True).stdout
    return set(json.loads(out.rstrip().rsplit("\n", 1)[1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for root in _NEVER_AT_START
                  if m == root or m.startswith(f"{root}."))


def test_version_loads_no_command_module_and_nothing_heavy() -> None:
    loaded = _loaded("--version")
    assert _heavy(loaded) == []
    assert sorted(m for m in loaded if m.endswith("_cmd")) == []


def test_help_loads_the_command_modules_but_nothing_heavy() -> None:
    loaded = _loaded("--help")
    assert _heavy(loaded) == []
    assert {f"certpair.cli.{module}" for module in COMMANDS.values()} <= loaded


def test_help_loads_no_socket_and_no_hash() -> None:
    # Each command module's imports are what `--help` pays for: the address and code
    # readers (socket) and the relay's tokens (hashlib, which loads OpenSSL's libcrypto)
    # load when a value is parsed or a token made, ~5 ms of `--help` (scripts/bench).
    for args in (("--version",), ("--help",)):
        loaded = _loaded(*args)
        assert loaded & {"socket", "hashlib", "_hashlib", "certpair.addresses"} == set(), args


def test_show_loads_its_own_module_only_and_no_store_tls_or_event_loop(
        tmp_path: Path) -> None:
    home = tmp_path / "a"
    subprocess.run([sys.executable, "-m", "certpair", "--home", str(home), "init", "--name",
                    "alpha"], check=True, capture_output=True)
    loaded = _loaded("--home", str(home), "show")
    assert sorted(m for m in loaded if m.endswith("_cmd")) == ["certpair.cli.show_cmd"]
    assert [m for m in ("ssl", "OpenSSL", "sqlite3", "asyncio", "certpair.store")
            if m in loaded] == []


def test_every_command_module_is_listed_under_its_own_name() -> None:
    modules = {p.stem for p in Path(cli_main.__file__).parent.glob("*_cmd.py")}
    assert set(COMMANDS.values()) == modules
    context = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None and command.name == name
    assert cli.list_commands(context) == sorted(COMMANDS)


@pytest.mark.parametrize("name", ["show", "tunnel"])
def test_global_options_are_accepted_after_a_lazily_loaded_command(
        tmp_path: Path, name: str) -> None:
    result = subprocess.run([sys.executable, "-m", "certpair", name, "--home",
                             str(tmp_path / "none"), "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


# What a running tunnel must do without (issue 23, peak RSS): the pairing stack and the
# key-rotation drivers (loaded at a sync), DNS-SD (with --no-advertise), and at start
# cryptography (~10 MB: ssl loads the identity's files itself).
_NEVER_IN_A_TUNNEL = ("certpair.net", "certpair.protocol", "certpair.rotation.exchange",
                      "zeroconf", "segno", "OpenSSL")
_TUNNEL_PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps({"event": "modules", "loaded": sorted(sys.modules)}),
                              flush=True))
from certpair.cli.main import main
sys.argv = ["certpair", *sys.argv[1:]]
main()
"""


def _tunnel_modules(devices: Devices, *, connections: int) -> list[set[str]]:
    """What ``tunnel serve`` and ``tunnel connect`` (real processes) had loaded when they
    stopped, after carrying ``connections`` connections."""
    service = Service(echo)
    ends: list[Proc] = []
    try:
        server = Proc([sys.executable, "-c", _TUNNEL_PROBE, "--home", str(devices.home("alpha")),
                       "tunnel", "serve", "--to", service.address, "--listen", LOOPBACK,
                       "--port", "0", "--no-advertise", "--json"])
        ends.append(server)
        client = Proc([sys.executable, "-c", _TUNNEL_PROBE, "--home", str(devices.home("beta")),
                       "tunnel", "connect", "alpha", "--to",
                       f"{LOOPBACK}:{server.next_event()['port']}", "--listen", "0", "--json"])
        ends.append(client)
        port = int(client.next_event()["port"])
        for _ in range(connections):
            with dial(port) as sock:
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
        loaded = []
        for end in ends:
            end.proc.terminate()
            code, rest, err = end.finish()
            assert code == 0, err
            loaded.append(set(next(e for e in rest if e["event"] == "modules")["loaded"]))
        return loaded
    finally:
        for end in ends:
            end.kill()
        service.close()


def _under(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for root in roots
                  if m == root or m.startswith(f"{root}."))


def test_a_tunnel_starts_without_cryptography_and_carries_without_the_pairing_stack(
        tmp_path: Path) -> None:
    devices = make_devices(tmp_path)
    for loaded in _tunnel_modules(devices, connections=0):
        assert "certpair.tunnel.pump" in loaded
        assert _under(loaded, (*_NEVER_IN_A_TUNNEL, "cryptography")) == []
    # A connection's peer check finds the certificate in the anchor directory (only
    # certificates that meet the profile are written there) instead of parsing it with
    # cryptography (~10 MB of peak RSS): no cryptography, no pairing, no sync.
    for loaded in _tunnel_modules(devices, connections=2):
        assert _under(loaded, (*_NEVER_IN_A_TUNNEL, "cryptography")) == []
