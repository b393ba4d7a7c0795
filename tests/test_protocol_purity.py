"""House rule 1: certpair.protocol does no I/O, reads no clock and draws no randomness.

Every module under ``certpair.protocol`` is parsed (not imported) and its imports are
checked against a deny list; the checker itself is tested on small sources so that a
walk which silently sees nothing cannot pass.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

import certpair
import certpair.protocol

_PROTOCOL_DIR: Final = Path(certpair.protocol.__file__).parent
_PACKAGE_ROOT: Final = Path(certpair.__file__).parent.parent

_FORBIDDEN: Final = (
    "socket",
    "ssl",
    "asyncio",
    "sqlite3",
    "time",
    "os",
    "secrets",
    "random",
    "certpair.net",
    "certpair.store",
    "certpair.tls",
)
# Reached through other certpair modules (codes, errors): the same list, except that
# codes may use `secrets` as the default randbelow; nothing reachable may do I/O.
_FORBIDDEN_TRANSITIVELY: Final = (
    *(name for name in _FORBIDDEN if name != "secrets"),
    "certpair.identity",
    "certpair.cli",
)
_DYNAMIC_IMPORTS: Final = frozenset({"__import__", "import_module"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module a source imports, relative imports resolved, ``from a import b`` as
    both ``a`` and ``a.b`` (b may be a submodule)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def dynamic_imports(source: str) -> list[str]:
    """Names of calls that import by string (``__import__``, ``importlib.import_module``)."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in _DYNAMIC_IMPORTS:
                calls.append(name)
    return calls


def violations(imports: set[str], forbidden: tuple[str, ...]) -> set[str]:
    """The imports that are, or are inside, a forbidden module."""
    return {
        name
        for name in imports
        for bad in forbidden
        if name == bad or name.startswith(bad + ".")
    }


def _protocol_modules() -> list[Path]:
    return sorted(_PROTOCOL_DIR.rglob("*.py"))


def _imports_of(path: Path) -> set[str]:
    return imported_modules(
        path.read_text(encoding="utf-8"), _module_name(path), is_package=_is_package(path)
    )


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("import socket", {"socket"}),
        ("import os.path", {"os.path"}),
        ("from os import urandom", {"os", "os.urandom"}),
        ("import time as clock", {"time"}),
        ("from secrets import token_bytes", {"secrets", "secrets.token_bytes"}),
        ("import random, ssl", {"random", "ssl"}),
        (
            "from asyncio.streams import StreamReader",
            {"asyncio.streams", "asyncio.streams.StreamReader"},
        ),
        ("from certpair import store", {"certpair.store"}),
        (
            "from certpair.net.pairing import run_join",
            {"certpair.net.pairing", "certpair.net.pairing.run_join"},
        ),
        ("from .. import tls", {"certpair.tls"}),
        ("from ..net import pairing", {"certpair.net", "certpair.net.pairing"}),
        ("if True:\n    def f():\n        import sqlite3", {"sqlite3"}),
        ("import certpair.codes\nfrom typing import TYPE_CHECKING", set()),
        ("import timeit\nimport osmosis", set()),
    ],
)
def test_checker_catches_forbidden_imports(source: str, caught: set[str]) -> None:
    found = imported_modules(source, "certpair.protocol.example")
    assert violations(found, _FORBIDDEN) == caught


def test_checker_catches_dynamic_imports() -> None:
    assert dynamic_imports("import importlib\nimportlib.import_module('socket')") == [
        "import_module"
    ]
    assert dynamic_imports("__import__('os')") == ["__import__"]
    assert dynamic_imports("print('import_module')") == []


def test_walk_finds_every_protocol_module() -> None:
    names = {_module_name(path) for path in _protocol_modules()}
    assert names >= {
        "certpair.protocol",
        "certpair.protocol.cpace",
        "certpair.protocol.events",
        "certpair.protocol.frames",
        "certpair.protocol.hmac_proof",
        "certpair.protocol.offer",
        "certpair.protocol.session",
    }


@pytest.mark.parametrize("path", _protocol_modules(), ids=_module_name)
def test_protocol_module_imports_no_io_clock_or_randomness(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert violations(_imports_of(path), _FORBIDDEN) == set()
    assert dynamic_imports(source) == []


def test_certpair_modules_reached_from_protocol_do_no_io() -> None:
    seen: set[str] = set()
    todo = [_module_name(path) for path in _protocol_modules()]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        parts = module.split(".")
        package_init = _PACKAGE_ROOT.joinpath(*parts, "__init__.py")
        plain = _PACKAGE_ROOT.joinpath(*parts).with_suffix(".py")
        path = package_init if package_init.exists() else plain
        if not path.exists():
            continue  # `from certpair.x import Name`: Name is not a module
        seen.add(module)
        imports = _imports_of(path)
        assert violations(imports, _FORBIDDEN_TRANSITIVELY) == set(), module
        todo += [name for name in imports if name.startswith("certpair.")]
    assert {"certpair.codes", "certpair.errors", "certpair.protocol.session"} <= seen
