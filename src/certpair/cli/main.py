"""The ``certpair`` command group, and the one place errors become exit statuses."""

from __future__ import annotations

import enum
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from certpair import __version__
from certpair.cli.context import command_hint, default_home, explain_home, home_from_env
from certpair.cli.terminal import printable
from certpair.errors import (
    BadInput,
    CertpairError,
    Expired,
    LocalStateError,
    NetworkError,
    PairingFailed,
)

__all__ = ["COMMANDS", "ExitStatus", "cli", "main"]

# Each command's name and the module under certpair.cli whose ``command`` it is. A
# module is imported only when its command runs (or for --help), so that
# ``certpair --version`` and ``show`` do not pay for every command's imports
# (docs/PERFORMANCE.md, ``cli_*_ms``). A new command is one line here.
COMMANDS: dict[str, str] = {
    "init": "init_cmd",
    "show": "show_cmd",
    "pair": "pair_cmd",
    "join": "join_cmd",
    "peers": "peers_cmd",
    "discover": "discover_cmd",
    "serve": "serve_cmd",
    "ping": "ping_cmd",
    "unpair": "unpair_cmd",
    "rename": "rename_cmd",
    "export": "export_cmd",
    "log": "log_cmd",
    "advise": "advise_cmd",
    "tunnel": "tunnel_cmd",
    "rotate": "rotate_cmd",
    "sync": "sync_cmd",
}


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


def _debug(ctx: click.Context) -> bool:
    return (bool(ctx.params.get("traceback")) or bool(ctx.meta.get(_DEBUG))
            or os.environ.get("CERTPAIR_DEBUG") == "1")


def _message(ctx: click.Context, error: CertpairError) -> str:
    # Hints name commands to run: keep the user's --home in them.
    text = str(error).replace("'certpair init'", f"'{command_hint(ctx, 'init')}'")
    if isinstance(error, LocalStateError):
        # The store or identity could not be written: say why, if the home is the cause.
        why = explain_home(ctx)
        if why is not None and why not in text.lower():
            text = f"{text} ({why})"
        if why is not None and "CERTPAIR_HOME" not in text and home_from_env(ctx):
            text = f"{text}; the home comes from CERTPAIR_HOME"
    return text


class _Group(click.Group):
    """The command group: commands load on first use, errors become exit statuses."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"certpair.cli.{COMMANDS[cmd_name]}")
            command: click.Command = module.command
            _accept_global_options(command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CertpairError as exc:
            if _debug(ctx):
                raise
            # Messages may quote what a peer chose (a name): never raw on a terminal.
            click.echo(f"Error: {printable(_message(ctx, exc))}", err=True)
            ctx.exit(exit_status(exc))
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(ExitStatus.INTERRUPTED)


_DEBUG = "certpair.debug"


def _late_home(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    del param
    if value is not None:
        root = ctx.find_root()
        root.obj = value
        root.meta["certpair.home_source"] = "option"


def _late_traceback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    del param
    if value:
        ctx.find_root().meta[_DEBUG] = True


def _accept_global_options(command: click.Command) -> None:
    """Accept --home and --traceback after the command name too (``show --home X``)."""
    command.params.extend([
        click.Option(["--home"], type=click.Path(path_type=Path), hidden=True,
                     expose_value=False, is_eager=True, callback=_late_home),
        click.Option(["--traceback"], is_flag=True, hidden=True, expose_value=False,
                     is_eager=True, callback=_late_traceback),
    ])


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    metavar="DIR",
    # No file_okay=False: a home that is a file is reported by home_of, naming where
    # the path came from (CERTPAIR_HOME or --home), with the right exit status.
    type=click.Path(path_type=Path),
    envvar="CERTPAIR_HOME",
    default=default_home,
    show_default="CERTPAIR_HOME, else the user data directory",
    help="Where this device's identity and trust store live.",
)
@click.option("--traceback", is_flag=True, help="Show the Python traceback of an error.")
@click.version_option(__version__, prog_name="certpair")
@click.pass_context
def cli(ctx: click.Context, home: Path, traceback: bool) -> None:
    """Pair two devices' self-signed TLS certificates with a short code.

    \b
    Examples:
      certpair init --name alpha           # once per device
      certpair pair                        # on one device: shows a code
      certpair join 192.168.1.20 CODE      # on the other device
      certpair peers
    """
    del traceback
    ctx.obj = home
    # Here rather than in main(): --version and --help never get this far, and so do
    # not import logging.
    _raise_fd_limit()
    _show_library_warnings()


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


def _show_library_warnings() -> None:
    # The library never prints; what it logs as a warning (a malformed advertisement
    # skipped, say) reaches the user as one line on stderr.
    import logging  # noqa: PLC0415  # keeps --version and --help fast

    logger = logging.getLogger("certpair")
    if not logger.propagate:
        return  # installed already (a second command in the same process)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("Warning: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="certpair"))
