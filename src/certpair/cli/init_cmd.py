"""``certpair init``: create this device's identity."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from certpair.cli.context import command_hint, emit_json, home_of, store_of
from certpair.errors import BadInput, LocalStateError

__all__ = ["command"]


def _confirm_replacement(ctx: click.Context, home: Path, yes: bool) -> None:
    """Replacing an identity with peers unpairs it everywhere: ask first, or need --yes."""
    if not (home / "trust.db").is_file():
        return
    count = len(store_of(ctx, read_only=True).peers())
    if count == 0 or yes:
        return
    devices = f"{count} paired device{'s' if count != 1 else ''}"
    consequence = (f"this identity has {devices}; with a new key they no longer trust this "
                   "device, and each must pair again")
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise BadInput(f"{consequence}: add --yes to replace it anyway")
    click.echo(f"Warning: {consequence}.", err=True)
    if not click.confirm("Replace the identity?", default=False, err=True):
        raise BadInput(f"identity kept; nothing changed ({command_hint(ctx, 'show')})")


@click.command("init", short_help="Create this device's key and certificate.")
@click.option("--name", metavar="NAME", show_default="this host's name",
              help="Device name shown to peers (1 to 64 bytes, no control characters).")
@click.option(
    "--key-type",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
    help="Key algorithm of the new identity.",
)
@click.option("--force", is_flag=True,
              help="Replace an existing identity; its paired devices must pair again.")
@click.option("--yes", "-y", is_flag=True,
              help="With --force: replace even an identity that has paired devices, "
                   "without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(
    ctx: click.Context, name: str | None, key_type: str, force: bool, yes: bool, as_json: bool
) -> None:
    """Create this device's key and self-signed certificate.

    \b
    Examples:
      certpair init --name alpha
      certpair --home /tmp/b init --name beta --key-type ed25519
    """
    from socket import gethostname  # noqa: PLC0415

    from certpair.identity import KeyType, create_identity  # noqa: PLC0415  # fast start-up
    from certpair.names import check_name  # noqa: PLC0415
    from certpair.store import open_store  # noqa: PLC0415

    home = home_of(ctx)
    if force:
        _confirm_replacement(ctx, home, yes)
    name = name or gethostname() or "device"
    check_name(name)
    # The store first: a disk too full to hold it fails the command before an identity
    # exists, so exit 5 means that nothing was created.
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalStateError(f"cannot create {home}: {exc.strerror or exc}") from exc
    open_store(home).close()
    identity = create_identity(home, name, key_type=KeyType(key_type), force=force)
    if as_json:
        emit_json({"name": identity.name, "fingerprint": identity.fingerprint,
                   "cert_path": str(identity.cert_path)})
    else:
        click.echo(f"Created identity {identity.name}  {identity.fingerprint}")
        click.echo(f"Certificate: {identity.cert_path}")
