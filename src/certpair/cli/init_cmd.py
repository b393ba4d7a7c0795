"""``certpair init``: create this device's identity."""

from __future__ import annotations

import socket

import click

from certpair.cli.context import emit_json, home_of

__all__ = ["command"]


@click.command("init")
@click.option("--name", help="Device name shown to peers (default: this host's name).")
@click.option(
    "--key-type",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Replace an existing identity.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def command(
    ctx: click.Context, name: str | None, key_type: str, force: bool, as_json: bool
) -> None:
    """Create this device's key and self-signed certificate."""
    from certpair.identity import KeyType, create_identity  # noqa: PLC0415  # fast start-up
    from certpair.store import open_store  # noqa: PLC0415

    home = home_of(ctx)
    identity = create_identity(
        home, name or socket.gethostname() or "device", key_type=KeyType(key_type), force=force
    )
    open_store(home).close()
    if as_json:
        emit_json({"name": identity.name, "fingerprint": identity.fingerprint,
                   "cert_path": str(identity.cert_path)})
    else:
        click.echo(f"Created identity {identity.name}  {identity.fingerprint}")
        click.echo(f"Certificate: {identity.cert_path}")
