"""House rule 1: certpair.protocol does no I/O, reads no clock and draws no randomness.

Imports are checked by import-linter (`lint-imports`, run by scripts/test before pytest):
the `protocol-pure` contract in pyproject.toml forbids socket, ssl, asyncio, sqlite3, time,
os, random and the I/O layers of certpair, directly or through any certpair module, and
`protocol-no-secrets` forbids a direct `secrets`. This file keeps what an import graph
cannot show: imports by string, built-ins that do I/O, and randomness or clock reads
through an allowed library (``X25519PrivateKey.generate()`` draws from the OS). The
checkers are tested on small sources so that a walk which silently sees nothing cannot
pass, and the contract itself is pinned so that deleting it is noticed.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest

import certpair
import certpair.protocol

_PROTOCOL_DIR: Final = Path(certpair.protocol.__file__).parent
_PACKAGE_ROOT: Final = Path(certpair.__file__).parent.parent
_PYPROJECT: Final = _PACKAGE_ROOT.parent / "pyproject.toml"

_DYNAMIC_IMPORTS: Final = frozenset({"__import__", "import_module"})
# Built-ins that touch files or the terminal without importing anything.
_IO_BUILTINS: Final = frozenset({"open", "print", "input", "breakpoint", "exec", "eval"})
# Calls that draw randomness or read a clock from a module the contract allows
# (cryptography) or that a name could hide (`from os import urandom as u` is caught by the
# contract; `key_cls.generate()` is not).
_IMPURE_ATTRIBUTES: Final = frozenset(
    {
        "generate",
        "generate_private_key",
        "urandom",
        "token_bytes",
        "token_hex",
        "randbelow",
        "getrandbits",
        "now",
        "utcnow",
        "today",
        "time",
        "monotonic",
        "perf_counter",
    }
)
# What the import contract must keep forbidding (a subset: it may forbid more).
_MUST_FORBID: Final = frozenset(
    {
        "socket",
        "ssl",
        "asyncio",
        "sqlite3",
        "time",
        "os",
        "random",
        "certpair.net",
        "certpair.store",
        "certpair.tls",
        "certpair.trusted",
        "certpair.identity",
        "certpair.cli",
    }
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def impure_calls(source: str) -> list[str]:
    """Names of calls that import by string, do I/O through a built-in, or draw
    randomness or read a clock through an attribute."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in _DYNAMIC_IMPORTS | _IO_BUILTINS:
                calls.append(func.id)
        elif isinstance(func, ast.Attribute) and func.attr in (
            _DYNAMIC_IMPORTS | _IMPURE_ATTRIBUTES
        ):
            calls.append(func.attr)
    return calls


def _protocol_modules() -> list[Path]:
    return sorted(_PROTOCOL_DIR.rglob("*.py"))


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return {contract["id"]: contract for contract in contracts}


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("import importlib\nimportlib.import_module('socket')", ["import_module"]),
        ("__import__('os')", ["__import__"]),
        ("with open('x') as f:\n    pass", ["open"]),
        ("print('hello')", ["print"]),
        ("X25519PrivateKey.generate()", ["generate"]),
        ("ec.generate_private_key(ec.SECP256R1())", ["generate_private_key"]),
        ("u = os.urandom(32)", ["urandom"]),
        ("datetime.datetime.now(tz=None)", ["now"]),
        ("clock.monotonic()", ["monotonic"]),
        ("if True:\n    def f():\n        return time.time()", ["time"]),
        ("print_frame('import_module')", []),
        ("self.expired(now)\nx.generated\nopen_box = 1", []),
    ],
)
def test_checker_catches_impure_calls(source: str, caught: list[str]) -> None:
    assert impure_calls(source) == caught


def test_walk_finds_every_protocol_module() -> None:
    names = {_module_name(path) for path in _protocol_modules()}
    assert names >= {
        "certpair.protocol",
        "certpair.protocol.cpace",
        "certpair.protocol.events",
        "certpair.protocol.frames",
        "certpair.protocol.hmac_proof",
        "certpair.protocol.machine",
        "certpair.protocol.offer",
        "certpair.protocol.session",
    }


@pytest.mark.parametrize("path", _protocol_modules(), ids=_module_name)
def test_protocol_module_calls_no_io_clock_or_randomness(path: Path) -> None:
    assert impure_calls(path.read_text(encoding="utf-8")) == []


def test_import_contract_forbids_io_clock_and_randomness_to_protocol() -> None:
    contract = _contracts()["protocol-pure"]
    assert contract["type"] == "forbidden"
    assert contract["source_modules"] == ["certpair.protocol"]
    assert not contract.get("allow_indirect_imports", False)
    assert set(contract["forbidden_modules"]) >= _MUST_FORBID
    direct = _contracts()["protocol-no-secrets"]
    assert (direct["source_modules"], direct["forbidden_modules"]) == (
        ["certpair.protocol"],
        ["secrets"],
    )
