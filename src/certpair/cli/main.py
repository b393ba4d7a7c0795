"""The ``certpair`` command group, and the one place errors become exit statuses."""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Any

import click

from certpair import __version__
from certpair.cli import (
    advise_cmd,
    discover_cmd,
    export_cmd,
    init_cmd,
    join_cmd,
    log_cmd,
    pair_cmd,
    peers_cmd,
    ping_cmd,
    rename_cmd,
    serve_cmd,
    show_cmd,
    unpair_cmd,
)
from certpair.cli.context import default_home
from certpair.errors import (
    BadInput,
    CertpairError,
    Expired,
    LocalStateError,
    NetworkError,
    PairingFailed,
)

__all__ = ["ExitStatus", "cli", "main"]


class ExitStatus(enum.IntEnum):
    """Exit statuses; scripts rely on them (README, "Exit codes")."""

    OK = 0
    PAIRING_FAILED = 1
    BAD_INPUT = 2
    EXPIRED = 3
    NETWORK = 4
    LOCAL_STATE = 5
    INTERRUPTED = 130


_STATUS: tuple[tuple[type[CertpairError], ExitStatus], ...] = (
    (PairingFailed, ExitStatus.PAIRING_FAILED),
    (BadInput, ExitStatus.BAD_INPUT),
    (Expired, ExitStatus.EXPIRED),
    (NetworkError, ExitStatus.NETWORK),
    (LocalStateError, ExitStatus.LOCAL_STATE),
)


def exit_status(error: CertpairError) -> ExitStatus:
    """Map a library error to its exit status."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return ExitStatus.LOCAL_STATE


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("traceback")) or os.environ.get("CERTPAIR_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except CertpairError as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exit_status(exc))
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(ExitStatus.INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CERTPAIR_HOME",
    default=default_home,
    show_default="CERTPAIR_HOME, else the user data directory",
    help="Where this device's identity and trust store live.",
)
@click.option("--traceback", is_flag=True, help="Show the Python traceback of an error.")
@click.version_option(__version__, prog_name="certpair")
@click.pass_context
def cli(ctx: click.Context, home: Path, traceback: bool) -> None:
    """Pair two devices' self-signed TLS certificates with a short code."""
    del traceback
    ctx.obj = home


for _module in (
    init_cmd, show_cmd, pair_cmd, join_cmd, peers_cmd, discover_cmd, serve_cmd, ping_cmd,
    unpair_cmd, rename_cmd, export_cmd, log_cmd, advise_cmd,
):
    cli.add_command(_module.command)


def _raise_fd_limit() -> None:
    # An offerer or server must survive many idle connections; the common soft limit
    # of 1024 descriptors is too low for that, the hard limit rarely is.
    try:
        import resource  # noqa: PLC0415  # POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    """Console-script entry point."""
    _raise_fd_limit()
    sys.exit(cli.main(prog_name="certpair"))
