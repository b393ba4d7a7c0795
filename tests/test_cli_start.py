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
