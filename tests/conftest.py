"""Shared fixtures: identities and stores in temporary homes, certpair processes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certpair.identity import Identity, create_identity
from certpair.store import TrustStore, open_store
from tests.cliutil import Proc, init


@pytest.fixture
def make_device(tmp_path: Path) -> Iterator[Callable[[str], tuple[Identity, TrustStore]]]:
    """Create a device (identity + open store) in its own home under tmp_path."""
    stores: list[TrustStore] = []

    def make(name: str) -> tuple[Identity, TrustStore]:
        home = tmp_path / name
        identity = create_identity(home, name)
        store = open_store(home)
        stores.append(store)
        return identity, store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    """Two initialised certpair homes: ``a`` named alpha, ``b`` named beta."""
    a, b = tmp_path / "a", tmp_path / "b"
    init(a, "alpha")
    init(b, "beta")
    return a, b


@pytest.fixture
def offerers() -> Iterator[list[Proc]]:
    """Processes to kill at the end, whatever happens."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=60))
    return True
