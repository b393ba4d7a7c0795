"""``certpair show``: this device's name, fingerprint and certificate path."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json, identity_of

__all__ = ["command"]


@click.command("show", short_help="Show this device's name and fingerprint.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Show this device's identity: name, fingerprint, certificate file.

    \b
    Examples:
      certpair show
      certpair --home /tmp/b show --json
    """
    identity = identity_of(ctx)
    if as_json:
        emit_json({"name": identity.name, "fingerprint": identity.fingerprint,
                   "cert_path": str(identity.cert_path)})
        return
    click.echo(f"Name:        {identity.name}")
    click.echo(f"Fingerprint: {identity.fingerprint}")
    click.echo(f"Certificate: {identity.cert_path}")
