"""``certpair show``: this device's name, fingerprint and certificate path."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json, identity_of

__all__ = ["command"]


@click.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Show this device's identity."""
    identity = identity_of(ctx)
    if as_json:
        emit_json({"name": identity.name, "fingerprint": identity.fingerprint,
                   "cert_path": str(identity.cert_path)})
        return
    click.echo(f"Name:        {identity.name}")
    click.echo(f"Fingerprint: {identity.fingerprint}")
    click.echo(f"Certificate: {identity.cert_path}")
