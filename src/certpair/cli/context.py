"""What every command needs: the home directory, the identity, the store, output."""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from certpair.identity import Identity
    from certpair.store import TrustStore

__all__ = ["default_home", "emit_json", "home_of", "identity_of", "iso_time", "store_of"]


def default_home() -> Path:
    """The platform's per-user data directory for certpair."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "certpair"


def home_of(ctx: click.Context) -> Path:
    """The ``--home`` of this invocation."""
    home = ctx.find_root().obj
    assert isinstance(home, Path)
    return home


def identity_of(ctx: click.Context) -> Identity:
    """Load this device's identity (exit 5 if there is none)."""
    from certpair.identity import load_identity  # noqa: PLC0415  # keeps start-up fast

    return load_identity(home_of(ctx))


def store_of(ctx: click.Context) -> TrustStore:
    """Open the trust store, closed when the command ends (exit 5 if unusable)."""
    from certpair.store import open_store  # noqa: PLC0415  # keeps start-up fast

    store = open_store(home_of(ctx))
    ctx.call_on_close(store.close)
    return store


def emit_json(obj: dict[str, Any]) -> None:
    """Print one JSON object on its own line, flushed at once."""
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=False))


def iso_time(at: float) -> str:
    """Seconds since the epoch as ``YYYY-MM-DDTHH:MM:SSZ``."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
