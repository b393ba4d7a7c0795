"""``certpair join [HOST[:PORT]] SECRET``: pair with an offerer."""

from __future__ import annotations

import asyncio

import click

from certpair.cli.context import emit_json, identity_of, store_of
from certpair.cli.params import HostPort, SecretParam
from certpair.errors import BadInput, CertpairError
from certpair.net.pairing import DEFAULT_PORT, run_join

__all__ = ["command"]


@click.command("join")
@click.argument("args", nargs=-1, metavar="[HOST[:PORT]] SECRET")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to connect and pair.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON events, one per line.")
@click.pass_context
def command(ctx: click.Context, args: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Pair with the device showing SECRET.

    The secret's format decides the mode: a digit code runs cpace, a long key hmac.
    A typo in the check character is caught here, before any connection.
    """
    if len(args) != 2:
        raise BadInput("give the offerer's address and the secret: join HOST[:PORT] SECRET")
    secret = SecretParam().convert(args[1], None, ctx)
    host, port = HostPort(DEFAULT_PORT).convert(args[0], None, ctx)
    identity = identity_of(ctx)
    store = store_of(ctx)
    try:
        peer = asyncio.run(run_join(identity=identity, store=store, host=host, port=port,
                                    secret=secret, timeout=timeout))
    except CertpairError as exc:
        if as_json:
            emit_json({"event": "failed", "reason": str(exc)})
        raise
    if as_json:
        emit_json({"event": "paired", "peer": {"name": peer.name, "fingerprint": peer.fingerprint}})
    else:
        click.echo(f"Paired with {peer.name}  {peer.fingerprint}")
