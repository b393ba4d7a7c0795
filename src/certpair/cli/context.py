"""What every command needs: the home directory, the identity, the store, output."""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import shlex
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from certpair.errors import BadInput, LocalStateError

if TYPE_CHECKING:
    from collections.abc import Callable

    from certpair.identity import Identity
    from certpair.store import Peer, TrustStore

_T = TypeVar("_T")

__all__ = [
    "check_identity",
    "command_hint",
    "default_home",
    "emit_json",
    "explain_home",
    "failure_json",
    "find_peer",
    "home_from_env",
    "home_of",
    "identity_of",
    "iso_time",
    "report_paired",
    "store_of",
]

_SHORT_PREFIX = re.compile(r"(sha256:)?[0-9a-f:]{1,3}", re.IGNORECASE)


def default_home() -> Path:
    """The platform's per-user data directory for certpair."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "certpair"


def _home_source(ctx: click.Context) -> str:
    """How the home was given: ``option``, ``env`` or ``default``."""
    root = ctx.find_root()
    meta = root.meta.get("certpair.home_source")
    if isinstance(meta, str):
        return meta
    source = root.get_parameter_source("home")
    if source is click.core.ParameterSource.COMMANDLINE:
        return "option"
    if source is click.core.ParameterSource.ENVIRONMENT:
        return "env"
    return "default"


def home_from_env(ctx: click.Context) -> bool:
    """Whether this invocation's home was given by ``CERTPAIR_HOME``."""
    return _home_source(ctx) == "env"


def _describe(ctx: click.Context, home: Path) -> str:
    source = _home_source(ctx)
    if source == "env":
        return f"CERTPAIR_HOME ({home})"
    if source == "option":
        return f"--home {home}"
    return f"the home directory {home}"


def home_of(ctx: click.Context) -> Path:
    """The ``--home`` of this invocation, checked to be usable as a directory.

    Raises:
        LocalStateError: a home from ``CERTPAIR_HOME`` (or the default) is a file or
            lies under one (exit 5, naming where it came from).
        BadInput: the same for a ``--home`` given on the command line (exit 2).
    """
    home = ctx.find_root().obj
    assert isinstance(home, Path)
    probe = home
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is" if probe == home else f"lies under {probe}, which is"
        message = f"{_describe(ctx, home)} {where} a file, not a directory"
        raise BadInput(message) if _home_source(ctx) == "option" else LocalStateError(message)
    return home


def command_hint(ctx: click.Context, command: str) -> str:
    """``certpair COMMAND``, keeping a ``--home`` the user gave on the command line."""
    if _home_source(ctx) == "option":
        return f"certpair --home {shlex.quote(str(ctx.find_root().obj))} {command}"
    return f"certpair {command}"


def explain_home(ctx: click.Context) -> str | None:
    """Why the home cannot be written, if it cannot (read-only, permission), else None."""
    try:
        home = home_of(ctx)
    except (BadInput, LocalStateError):
        return None
    probe = home if home.exists() else home.parent
    try:
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS).lower()
    except OSError:
        return None
    if not os.access(probe, os.W_OK):
        return os.strerror(errno.EACCES).lower()
    return None


def identity_of(ctx: click.Context) -> Identity:
    """Load this device's identity (exit 5 if there is none)."""
    from certpair.identity import load_identity  # noqa: PLC0415  # fast start-up

    return _with_hint(ctx, load_identity)


def check_identity(ctx: click.Context) -> None:
    """Check this device's identity files as :func:`identity_of` does, without parsing
    them (exit 5 if there is none): for a command that hands them to ``ssl``."""
    from certpair.identity import identity_files  # noqa: PLC0415  # fast start-up

    _with_hint(ctx, identity_files)


def _with_hint(ctx: click.Context, load: Callable[[Path], _T]) -> _T:
    from certpair.identity import NotInitialised  # noqa: PLC0415  # fast start-up

    home = home_of(ctx)
    try:
        return load(home)
    except NotInitialised:
        raise NotInitialised(
            f"no identity in {home}; run '{command_hint(ctx, 'init')}' first") from None


def _open_read_only(path: Path) -> TrustStore:
    """Open an existing store that cannot be written (read-only file system or home).

    SQLite cannot open a WAL database read-only where it may not create its shared-
    memory file, unless told the file cannot change while open (``immutable``).
    """
    import sqlite3  # noqa: PLC0415  # fast start-up

    from certpair.store import StoreUnusable, TrustStore  # noqa: PLC0415

    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        db.execute("SELECT 1 FROM peers LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StoreUnusable(f"cannot open the trust store {path}") from exc
    return TrustStore(db, path)


def store_of(ctx: click.Context, *, read_only: bool = False,
             verify: bool | None = None) -> TrustStore:
    """Open the trust store, closed when the command ends (exit 5 if unusable).

    Args:
        ctx: the command's context.
        read_only: the command only reads; then a store in a home that cannot be
            written is still opened, read-only.
        verify: check the peers before anything uses them (``TrustStore.verify_peers``;
            default: for writers). ``unpair`` and ``rename`` act on one row and are how
            a damaged row is removed; ``ping`` reads one peer: they check what they read.
    """
    from certpair.store import StoreUnusable, open_store  # noqa: PLC0415  # fast start-up
    from certpair.store.schema import open_store_for_reading  # noqa: PLC0415

    home = home_of(ctx)
    if not (home / "trust.db").exists() and not (home / "identity" / "cert.pem").exists():
        # Before `init` there is nothing to read or write: say what to do, as `show` does.
        from certpair.identity import NotInitialised  # noqa: PLC0415

        raise NotInitialised(
            f"no identity in {home}; run '{command_hint(ctx, 'init')}' first")
    try:
        # A reader works on a full disk too; a writer says the disk is full.
        store = open_store_for_reading(home) if read_only else open_store(home)
    except StoreUnusable:
        why = explain_home(ctx)
        if why is None:
            raise
        if not read_only or not (home / "trust.db").is_file():
            raise StoreUnusable(f"cannot write the trust store in {home}: {why}") from None
        store = _open_read_only(home / "trust.db")
    ctx.call_on_close(store.close)
    if (not read_only) if verify is None else verify:
        store.verify_peers()
    return store


def find_peer(store: TrustStore, query: str) -> Peer:
    """The one paired device ``query`` names; a too-short prefix is said to be one."""
    from certpair.store import MIN_PREFIX_DIGITS, PeerNotFound  # noqa: PLC0415

    try:
        return store.find_peer(query)
    except PeerNotFound:
        if _SHORT_PREFIX.fullmatch(query):
            raise PeerNotFound(
                f"no paired device is called {query!r}, and a fingerprint prefix needs at "
                f"least {MIN_PREFIX_DIGITS} hex digits (see 'certpair peers')") from None
        raise


def emit_json(obj: dict[str, Any]) -> None:
    """Print one JSON object on its own line, flushed at once."""
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=False))


def peer_json(peer: Peer | None) -> dict[str, str] | None:
    """A peer as the long-running commands' JSON lines name it."""
    return None if peer is None else {"name": peer.name, "fingerprint": peer.fingerprint}


def advertised_json(problem: str | None, again: str | None = None) -> dict[str, Any]:
    """How ``serve`` and ``tunnel serve`` say their DNS-SD publication went, in JSON
    (``again``: published anew while running, and why)."""
    more = {} if again is None else {"again": again}
    return ({"event": "advertised", **more} if problem is None
            else {"event": "not_advertised", "reason": problem, **more})


def advertised_text(problem: str | None, service: str, again: str | None = None) -> str:
    """The same in words; ``service`` is the DNS-SD service type (``_certpair-serve._tcp``)."""
    if problem is not None:
        return f"Not advertised: {problem}" + ("" if again is None else f" ({again})")
    if again is not None:
        return f"Advertised again on the local network: {again}"
    return f"Advertised on the local network ({service}, fingerprint only)"


def failure_json(error: Exception) -> dict[str, Any]:
    """The JSON line of a pairing that did not end paired: ``failed``, or
    ``unconfirmed`` (with the peer kept unconfirmed) when the outcome is unknown."""
    from certpair.errors import PairingUnconfirmed  # noqa: PLC0415  # keeps start-up fast

    if isinstance(error, PairingUnconfirmed):
        peer = error.peer
        return {"event": "unconfirmed", "reason": str(error),
                "peer": {"name": getattr(peer, "name", None),
                         "fingerprint": getattr(peer, "fingerprint", None)}}
    return {"event": "failed", "reason": str(error)}


def iso_time(at: float) -> str:
    """Seconds since the epoch as ``YYYY-MM-DDTHH:MM:SSZ``."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def report_paired(peer: Peer, *, as_json: bool, path: str | None = None) -> None:
    """Say that a pairing succeeded; under which name when the peer's (or a look-alike
    of it) was taken; which DNS names its certificate claims beyond its device name
    (a tool trusting an unpinned ``peers.pem`` accepts it under those: docs/TRUST.md);
    and ``path`` (``direct`` or ``relay``), the way the pairing went, when one is known."""
    from certpair.profile import extra_dns_names  # noqa: PLC0415  # keeps start-up fast

    extra = extra_dns_names(peer.cert_der, peer.given_name or peer.name)
    if as_json:
        line: dict[str, Any] = {"name": peer.name, "fingerprint": peer.fingerprint}
        if peer.given_name is not None:
            line["given_name"] = peer.given_name
        if extra:
            line["extra_dns_names"] = extra
        event: dict[str, Any] = {"event": "paired", "peer": line}
        if path is not None:
            event["path"] = path
        emit_json(event)
        return
    from certpair.cli.terminal import printable  # noqa: PLC0415  # keeps start-up fast

    how = {"relay": "  (through the relay)", "direct": "  (direct)"}.get(path or "", "")
    click.echo(f"Paired with {printable(peer.name)}  {peer.fingerprint}{how}")
    if peer.given_name is not None:
        click.echo(f"Another paired device is already called '{printable(peer.given_name)}' "
                   f"(or a name that looks the same); this one is stored as "
                   f"'{printable(peer.name)}' (see 'certpair peers', 'certpair rename').",
                   err=True)
    if extra:
        shown = ", ".join(printable(n) for n in extra[:5]) + (
            f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        click.echo(f"note: {printable(peer.name)}'s certificate also claims DNS names "
                   f"beyond its device name: {shown}; an unpinned peers.pem export would "
                   "vouch for it under them (export it with --peer: docs/TRUST.md).",
                   err=True)
